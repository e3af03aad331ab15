"""`selfsup bench collapse` and `selfsup bench noncontrastive`: wiring, outputs, the shipped pipeline."""

import csv
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from selfsup.plugins.noncontrastive import benchmark, collapse_study

ROOT = Path(__file__).resolve().parents[3]


def test_example_collapse_study_yaml_is_the_built_in_pipeline():
    shipped = OmegaConf.to_container(OmegaConf.load(ROOT / "examples" / "collapse_study.yaml"))
    assert shipped == collapse_study.PIPELINE


def fake_results():
    def curves(std, rank):
        return [{"step": s, "loss": -0.5, "embedding_std": std(s), "effective_rank": rank(s), "uniformity": -1.0,
                 "knn_accuracy": 0.8} for s in range(10, 110, 10)]

    healthy = {"curves": curves(lambda s: 0.07, lambda s: 35.0), "collapse": None, "loss": -0.8, "test_knn": 0.85,
               "steps": 100, "final": {"embedding_std": 0.07, "effective_rank": 35.0, "knn_accuracy": 0.8}}
    broken = {"curves": curves(lambda s: 0.07 / s, lambda s: 40.0 / s), "loss": -0.99, "test_knn": 0.5, "steps": 100,
              "collapse": {"step": 40, "metric": "embedding_std", "value": 0.0017, "threshold": 0.02},
              "final": {"embedding_std": 0.0007, "effective_rank": 0.4, "knn_accuracy": 0.6}}
    return {"simsiam": healthy, "no_stop_gradient": broken}


def test_collapse_study_plot_table_and_csv(tmp_path):
    results = fake_results()
    table = collapse_study.format_table(results)
    assert "no_stop_gradient" in table and "yes (step 40)" in table and "collapse" in table
    assert table.splitlines()[2].split()[-2:] == ["no", "healthy"]
    png = collapse_study.save_plot(results, {"collapse_std": 0.02, "collapse_rank": 3.0}, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    rows = list(csv.DictReader(open(collapse_study.save_csv(results, tmp_path / "c.csv"))))
    assert len(rows) == 20 and {r["flagged_at"] for r in rows if r["variant"] == "no_stop_gradient"} == {"40"}


@pytest.mark.slow
def test_collapse_study_runs_end_to_end(tmp_path, capsys):
    code = collapse_study.main([
        "--steps", "4", "--variants", "simsiam", "no_predictor", "--out", str(tmp_path), "--threads", "1",
        "objective.encoder.width=2", "monitor.probe_size=32", "monitor.every=2", "trainer.log_every=2",
        "data.batch_size=32", "objective.embedding_dim=16",
    ])
    assert code == 0  # without --check a disagreement is reported, not an error
    out = capsys.readouterr().out
    assert "variant" in out and "no_predictor" in out
    assert (tmp_path / "collapse_study.png").exists() and (tmp_path / "collapse_study.csv").exists()


@pytest.mark.slow
def test_noncontrastive_benchmark_runs_on_any_npz(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(160, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 4, size=160)
    np.savez(tmp_path / "tiny.npz", x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:])
    benchmark.main(["--data", str(tmp_path / "tiny.npz"), "--steps", "2", "--width", "2", "--batch-size", "32",
                    "--methods", "byol", "barlow_twins", "--threads", "1", "--out", str(tmp_path / "runs"),
                    "--csv", str(tmp_path / "t.csv")])
    out = capsys.readouterr().out
    assert "random init" in out and "byol" in out and "barlow_twins" in out
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert [r["method"] for r in rows] == ["random_init", "byol", "barlow_twins"]
    assert all(1.0 <= float(r["effective_rank"]) <= 16 for r in rows)


def test_noncontrastive_benchmark_names_a_missing_data_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["--data", str(tmp_path / "nope.npz")])
    assert "no such file" in capsys.readouterr().err
