"""`selfsup bench angular`: its defaults are the example pipeline; the command writes its table, CSV and plot."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from selfsup.plugins.bench.angular import DEFAULT_PIPELINE, main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "angular_multimodal.yaml"


def test_benchmark_defaults_are_the_example_pipeline() -> None:
    assert OmegaConf.to_container(OmegaConf.load(EXAMPLE)) == DEFAULT_PIPELINE



@pytest.mark.slow
def test_benchmark_command_runs_and_writes_its_files(tmp_path, capsys) -> None:
    cfg = copy.deepcopy(DEFAULT_PIPELINE)
    cfg["data"]["dataset"] = {"name": "multiview_digits", "modalities": ["rows", "columns", "spectrum"]}
    cfg["objective"]["encoder"].update(dim=16, heads=2)
    path = tmp_path / "bench.yaml"
    OmegaConf.save(OmegaConf.create(cfg), path)
    code = main(["--config", str(path), "--epochs", "1", "--methods", "arcface,softmax_ce",
                 "--timing-epochs", "1", "--out-dir", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| arcface |" in printed and "| softmax_ce |" in printed and "s/epoch M=3" in printed
    assert "inter/intra angle ratio" in printed
    assert (tmp_path / "out" / "accuracy_vs_time.png").stat().st_size > 1000
    rows = (tmp_path / "out" / "angular_bench.csv").read_text().splitlines()
    assert rows[0] == "method,epoch,train_seconds,proto_acc,knn_acc" and len(rows) == 3
