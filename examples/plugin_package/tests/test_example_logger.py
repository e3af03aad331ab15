"""The package's metrics sink: best values by hand, and in a real training run."""

import json

from omegaconf import OmegaConf

from selfsup.engine import build_trainer
from selfsup.testing import check_logger, plugin_registry

from selfsup_example_plugin import plugin
from selfsup_example_plugin.best_metrics import BestMetricsLogger


def test_keeps_the_best_value_in_each_direction(tmp_path):
    check_logger(BestMetricsLogger())
    sink = BestMetricsLogger()
    sink.open(tmp_path, {}, resume=False)
    for step, loss, knn in ((10, 2.0, None), (20, 1.5, 0.7), (30, 1.8, 0.6), (40, 1.6, 0.75)):
        sink.log({"step": step, "loss": loss, **({"knn_acc": knn} if knn else {})}, "train")
    assert json.loads((tmp_path / "best.json").read_text()) == {
        "loss": {"value": 1.5, "step": 20}, "knn_acc": {"value": 0.75, "step": 40}}
    resumed = BestMetricsLogger()
    resumed.open(tmp_path, {}, resume=True)
    resumed.log({"step": 50, "loss": 1.7}, "train")  # worse than the best before the stop: kept
    assert resumed.best["loss"] == {"value": 1.5, "step": 20}


def test_listed_in_trainer_loggers_it_receives_the_run(tmp_path):
    cfg = {
        "data": {"dataset": {"name": "digits"}, "batch_size": 64},
        "objective": {"name": "moco", "encoder": {"name": "small_conv", "width": 4}, "embedding_dim": 8},
        "trainer": {"epochs": None, "max_steps": 4, "log_every": 2, "eval_before": False, "eval_after": False,
                    "loggers": ["jsonl", {"name": "best_metrics", "minimize": ["loss"], "maximize": []}]},
    }
    trainer = build_trainer(OmegaConf.create(cfg), plugin_registry(plugin), run_dir=tmp_path / "run")
    trainer.fit()
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert set(best) == {"loss"} and best["loss"]["value"] == min(losses)
