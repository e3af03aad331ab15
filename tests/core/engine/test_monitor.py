"""The collapse monitor: diagnostics in the metrics rows and metrics.json, the warning, the stop."""

import json
import re

import pytest
from omegaconf import OmegaConf

from support import RecordingCallback, tiny_pipeline
from selfsup.engine import build_trainer
from selfsup.errors import CollapseDetected
from selfsup.interfaces import ProbeEmbeddings
from selfsup.errors import ConfigError

DIAGNOSTICS = ["embedding_std", "effective_rank", "alignment", "uniformity"]


def monitored(tmp_path, **monitor):
    cfg = tiny_pipeline(tmp_path, trainer__max_steps=6, trainer__log_every=2)
    cfg["monitor"] = {"diagnostics": DIAGNOSTICS, "every": 4, "probe_size": 64, **monitor}
    return cfg


def rows(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


def test_diagnostics_join_the_metrics_rows_and_metrics_json(tmp_path, registry):
    cfg = monitored(tmp_path)
    cfg["trainer"]["eval_after"] = True
    build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run").fit()
    logged = rows(tmp_path / "run")
    assert [r["step"] for r in logged] == [2, 4, 6]
    assert [r["step"] for r in logged if "effective_rank" in r] == [2, 6]  # first row, then >= 4 steps later
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert set(DIAGNOSTICS) <= set(header)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())["monitor"]
    assert summary["step"] == 6 and set(summary["values"]) == set(DIAGNOSTICS)
    assert summary["values"]["effective_rank"] == logged[-1]["effective_rank"]  # not measured twice
    assert summary["collapse"] is None
    assert 0.0 <= summary["values"]["embedding_std"] <= 1.0 and summary["values"]["uniformity"] <= 0.0


def test_collapse_warns_once_naming_value_and_threshold(tmp_path, registry, capsys):
    # the std of normalised embeddings never reaches 1.0: every measurement is "collapsed"
    cfg = monitored(tmp_path, collapse_std=1.0)
    trainer = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run")
    events = RecordingCallback()
    result = trainer.add_callback(events).fit()
    assert result.steps == 6 and not result.interrupted  # warning only: training goes on
    assert capsys.readouterr() == ("", "")  # the engine prints nothing: the warning is an event
    err = "\n".join(events.messages["warning"])
    assert err.count("collapse detected") == 1
    assert "collapse detected at step 2: embedding_std" in err and "< monitor.collapse_std 1" in err
    collapse = trainer.monitor.summary(trainer.objective, trainer.global_step)["collapse"]  # what metrics.json gets
    assert collapse["step"] == 2 and collapse["metric"] == "embedding_std" and collapse["threshold"] == 1.0


@pytest.mark.parametrize("setting, expected", [
    ({"collapse_above": {"uniformity": -100.0}}, r"uniformity -?[0-9.]+ > monitor.collapse_above.uniformity -100"),
    ({"collapse_below": {"uniformity": 0.5}}, r"uniformity -?[0-9.]+ < monitor.collapse_below.uniformity 0.5"),
])
def test_thresholds_on_any_diagnostic_flag_collapse(tmp_path, registry, setting, expected):
    # uniformity lies in [-4t, 0]: always above -100 and below 0.5, so the first check flags it
    trainer = build_trainer(OmegaConf.create(monitored(tmp_path, **setting)), registry, run_dir=tmp_path / "run")
    events = RecordingCallback()
    trainer.add_callback(events).fit()
    assert len(events.messages["warning"]) == 1
    assert re.search("collapse detected at step 2: " + expected, events.messages["warning"][0])
    summary = trainer.monitor.summary(trainer.objective, trainer.global_step)
    assert summary["collapse"]["key"] == next(f"{k}.uniformity" for k in setting)
    # a threshold the values never cross: no collapse
    quiet = build_trainer(OmegaConf.create(monitored(tmp_path / "q", collapse_above={"uniformity": 0.5})), registry,
                          run_dir=tmp_path / "quiet")
    quiet.fit()
    assert quiet.monitor.collapse is None


def test_warmup_steps_are_measured_but_not_checked(tmp_path, registry):
    trainer = build_trainer(OmegaConf.create(monitored(tmp_path, collapse_std=1.0, warmup_steps=3)), registry,
                            run_dir=tmp_path / "run")
    events = RecordingCallback()
    trainer.add_callback(events).fit()
    assert "collapse detected at step 6" in events.messages["warning"][0]  # step 2 was inside the warm-up
    assert [r["step"] for r in rows(tmp_path / "run") if "embedding_std" in r] == [2, 6]


def test_stop_on_collapse_stops_cleanly_with_a_checkpoint(tmp_path, registry):
    cfg = monitored(tmp_path, collapse_rank=1e6, stop_on_collapse=True)
    trainer = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run")
    expected = r"collapse detected at step 2: effective_rank [0-9.]+ < monitor.collapse_rank 1e\+06"
    with pytest.raises(CollapseDetected, match=expected):
        trainer.fit()
    assert trainer.global_step == 2
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    assert [r["step"] for r in rows(tmp_path / "run")] == [2]


def test_python_callables_can_be_diagnostics(tmp_path, registry):
    seen = []

    def probe_size(probe: ProbeEmbeddings) -> float:
        seen.append((probe.embeddings.shape, probe.view1.shape, probe.labels.shape))
        return float(probe.embeddings.shape[0])

    cfg = monitored(tmp_path, diagnostics=[])
    trainer = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run")
    from selfsup.engine import Trainer

    trainer = Trainer(trainer.objective, trainer.data, trainer.transform, trainer.settings, tmp_path / "py",
                      diagnostics={"probe_rows": probe_size})
    trainer.fit()
    assert [r.get("probe_rows") for r in rows(tmp_path / "py")] == [64.0, None, 64.0]
    dim = trainer.objective.encoder.out_dim
    assert seen[0] == ((64, dim), (64, dim), (64,))


@pytest.mark.parametrize("monitor, message", [
    ({"diagnostics": ["embeding_std"]}, r"monitor.diagnostics.0.name: .*Did you mean 'embedding_std'"),
    ({"diagnostics": ["uniformity"], "collapse_rank": 2.0}, r"monitor.collapse_rank: .*'effective_rank'"),
    ({"diagnostics": ["uniformity"], "every": 0}, r"monitor.every"),
    ({"diagnostics": ["uniformity", "uniformity"]}, r"monitor.diagnostics.1: .*twice"),
    ({"diagnostics": ["uniformity"], "source": "project"}, r"monitor.source: MoCo has no project"),
    ({"diagnostics": [{"name": "uniformity", "t": -1.0}]}, r"monitor.diagnostics.0: .*t must be > 0"),
    ({"diagnostics": ["uniformity"], "stop_on_collapse": True}, r"monitor.stop_on_collapse"),
    ({"diagnostics": ["uniformity"], "evry": 3}, r"monitor.evry: .*Did you mean 'every'"),
    ({"diagnostics": ["uniformity"], "collapse_above": {"alignment": 1.0}},
     r"monitor.collapse_above.alignment: 'alignment' is not in monitor.diagnostics"),
    ({"diagnostics": ["uniformity"], "collapse_below": {"uniformity": "low"}},
     r"monitor.collapse_below.uniformity: expected a finite number"),
])
def test_monitor_mistakes_are_config_errors(tmp_path, registry, monitor, message):
    cfg = tiny_pipeline(tmp_path)
    cfg["monitor"] = monitor
    with pytest.raises(ConfigError, match=message):
        build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run")
