"""``selfsup study``: --dry-run, --jobs 2 worker processes, errors as one paragraph."""

from __future__ import annotations

import csv

from omegaconf import OmegaConf

from support import tiny_pipeline

from selfsup.cli import main


def make_study(tmp_path, variants: str) -> str:
    OmegaConf.save(OmegaConf.create(tiny_pipeline(tmp_path, data__batch_size=32)), tmp_path / "base.yaml")
    path = tmp_path / "two.yaml"
    path.write_text("pipeline: base.yaml\noverrides: [trainer.eval_after=true, monitor.probe_size=64]\n"
                    f"budget: {{steps: 3}}\nvariants:\n{variants}")
    return str(path)


def test_dry_run_lists_runs_without_training(tmp_path, capsys):
    study = make_study(tmp_path, "  - {name: a}\n  - {name: b, overrides: [optim.lr=0.1]}\n")
    assert main(["study", study, "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "study two: 2 run(s), budget 3 steps" in out
    assert out.count(" new\n") == 2 and "a-s0-" in out and "b-s0-" in out
    assert not (tmp_path / "out").exists()


def test_errors_are_one_paragraph_with_exit_code_2(tmp_path, capsys):
    study = make_study(tmp_path, "  - {name: a, overrides: [objective.encoder.widht=8]}\n")
    assert main(["study", study, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: variant 'a': ") and err.count("\n") == 1


def test_two_jobs_run_as_worker_processes(tmp_path, capsys):
    study = make_study(tmp_path, "  - {name: a}\n  - {name: b, overrides: [optim.lr=0.1]}\n")
    out_dir = tmp_path / "out"
    assert main(["study", study, "--out", str(out_dir), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count(": start -> ") == 2 and out.count(": ok, kNN ") == 2
    assert f"table: {out_dir / 'study.md'}" in out
    with open(out_dir / "study.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["variant"], r["status"], r["steps"]) for r in rows] == [("a", "ok", "3"), ("b", "ok", "3")]
    assert sorted(p.name for p in (out_dir / "logs").iterdir()) == sorted(f"{r['run_dir'].rsplit('/', 1)[1]}.log"
                                                                          for r in rows)
    # the same command again: both skipped
    assert main(["study", study, "--out", str(out_dir), "--jobs", "2"]) == 0
    assert capsys.readouterr().out.count("done earlier (ok") == 2
