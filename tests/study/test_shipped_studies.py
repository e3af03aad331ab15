"""The study files shipped in examples/studies/: every one validates, and the collapse study
flags exactly the broken SimSiam variants."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from selfsup.cli import main
from selfsup.study import load_study, plan_study

STUDIES = Path(__file__).resolve().parents[2] / "examples" / "studies"


@pytest.mark.parametrize("name", sorted(p.stem for p in STUDIES.glob("*.yaml") if "pipeline:" in p.read_text()))
def test_shipped_study_plans(name, tmp_path):
    spec = load_study(STUDIES / f"{name}.yaml")
    runs = plan_study(spec, tmp_path / "out")
    assert len(runs) == len(spec.variants) * len(spec.seeds) and len({r.key for r in runs}) == len(runs)
    for run in runs:  # the study always measures what its table reports
        assert {"embedding_std", "effective_rank"} <= set(run.resolved["monitor"]["diagnostics"])


@pytest.mark.slow
def test_collapse_study_flags_only_the_broken_variants(tmp_path, capsys):
    # 60 steps: past the 20-step warm-up and the step (27) at which the broken variants are flagged
    code = main(["study", str(STUDIES / "collapse_simsiam.yaml"), "--steps", "60", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr()
    with open(tmp_path / "study.csv", newline="") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert {v: rows[v]["collapsed"] for v in rows} == {"simsiam": "false", "no_stop_gradient": "true",
                                                       "no_predictor": "true"}
    assert all(r["status"] == "ok" and int(r["steps"]) == 60 for r in rows.values())
    assert float(rows["simsiam"]["effective_rank"]) > 5 * float(rows["no_stop_gradient"]["effective_rank"])
    assert (tmp_path / "study.md").exists() and (tmp_path / "study.png").stat().st_size > 10_000
