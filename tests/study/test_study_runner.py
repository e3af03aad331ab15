"""The study runner on tiny digits pipelines: keying, validation, failures as results, resume."""

from __future__ import annotations

import csv
import json
import signal

import pytest
from omegaconf import OmegaConf

from support import tiny_pipeline

import selfsup.study.execute as execute
import selfsup.study.plan as plan
import selfsup.study.runner as runner
from selfsup.errors import ConfigError
from selfsup.study import RunRecord, load_study, plan_study, run_study
from selfsup.study.report import CSV_COLUMNS, markdown_table, study_rows, write_report

STEPS = 4
#: Every run: the final kNN (a study needs it), a small monitor probe, no plots.
FAST = "trainer.eval_after=true, monitor.probe_size=64, trainer.log_every=2"


def make_study(tmp_path, variants: str, extra: str = "", name: str = "study.yaml", overrides: str = ""):
    pipeline = tiny_pipeline(tmp_path, data__batch_size=32)
    OmegaConf.save(OmegaConf.create(pipeline), tmp_path / "base.yaml")
    path = tmp_path / name
    path.write_text(f"pipeline: base.yaml\noverrides: [{FAST}{overrides}]\nbudget: {{steps: {STEPS}}}\n{extra}"
                    f"variants:\n{variants}")
    return path


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def built(monkeypatch):
    """Records the run folder of every trainer the runner builds (validation builds go to a scratch folder)."""
    calls = []
    real = execute.build_trainer

    def build(cfg, *args, run_dir=None, **kwargs):
        calls.append(run_dir)
        return real(cfg, *args, run_dir=run_dir, **kwargs)

    monkeypatch.setattr(execute, "build_trainer", build)
    monkeypatch.setattr(plan, "build_trainer", build)
    return calls


def test_run_folders_are_keyed_by_the_resolved_pipeline(tmp_path):
    variants = "  - {name: a, overrides: []}\n  - {name: b, overrides: [optim.lr=0.1]}\n"
    spec = load_study(make_study(tmp_path, variants, extra="seeds: [0, 1]\n"))
    runs = plan_study(spec, tmp_path / "out")
    assert [(r.variant, r.seed) for r in runs] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert len({r.key for r in runs}) == 4
    assert all(r.key.startswith(f"{r.variant}-s{r.seed}-") and len(r.key.rsplit("-", 1)[1]) == 10 for r in runs)
    assert runs[0].run_dir == tmp_path / "out" / runs[0].key
    # the budget, the seed and the study's diagnostics are in every resolved pipeline
    resolved = runs[3].resolved
    assert resolved["trainer"]["max_steps"] == STEPS and resolved["trainer"]["epochs"] is None
    assert resolved["seed"] == 1 and resolved["optim"]["lr"] == 0.1
    assert resolved["monitor"]["diagnostics"] == ["embedding_std", "effective_rank"]
    # changing one variant's overrides changes its folders only; cosmetic keys change nothing
    changed = load_study(make_study(tmp_path, variants.replace("optim.lr=0.1", "optim.lr=0.2"),
                                    extra="seeds: [0, 1]\n", overrides=", trainer.progress=true", name="s2.yaml"))
    again = plan_study(changed, tmp_path / "out")
    assert [r.key for r in again[:2]] == [r.key for r in runs[:2]]
    assert not {r.key for r in again[2:]} & {r.key for r in runs}
    # a quick version (--minutes) resolves to other pipelines, hence other folders
    quick = plan_study(load_study(spec.path, minutes=0.5), tmp_path / "out")
    assert quick[0].resolved["trainer"]["max_minutes"] == 0.5 and quick[0].resolved["trainer"]["max_steps"] is None
    assert not {r.key for r in quick} & {r.key for r in runs}


def test_every_variant_is_validated_before_anything_runs(tmp_path, built):
    variants = ("  - {name: good, overrides: []}\n"
                "  - {name: typo, overrides: [objective.encoder.widht=8]}\n")
    spec = load_study(make_study(tmp_path, variants))
    with pytest.raises(ConfigError) as info:
        run_study(spec, tmp_path / "out")
    message = str(info.value)
    assert "variant 'typo'" in message and "objective.encoder.widht" in message and "\n" not in message
    assert built and not (tmp_path / "out").exists()  # validated; nothing ran, nothing was written
    assert all(str(tmp_path / "out") not in str(d) for d in built)


def test_section_errors_and_study_needs_name_the_variant(tmp_path):
    spec = load_study(make_study(tmp_path, "  - {name: a}\n  - {name: bad, overrides: [trainer.epoks=3]}\n"))
    with pytest.raises(ConfigError, match=r"variant 'bad': trainer\.epoks"):
        plan_study(spec)
    spec = load_study(make_study(tmp_path, "  - {name: quiet, overrides: [trainer.eval_after=false]}\n"))
    with pytest.raises(ConfigError, match="variant 'quiet': trainer.eval_after is false"):
        plan_study(spec)
    spec = load_study(make_study(tmp_path, "  - {name: a}\n", extra="metric: linear_acc\n"))
    with pytest.raises(ConfigError, match="metric: linear_acc needs eval.linear_probe=true"):
        plan_study(spec)


def test_a_tiny_study_records_failures_and_goes_on(tmp_path, built, monkeypatch, capsys):
    variants = ("  - {name: base, overrides: []}\n"
                "  - {name: diverges, overrides: [optim.lr=1e9]}\n"
                "  - {name: crashes, overrides: [optim.lr=0.01]}\n"
                "  - {name: queue, overrides: [objective.sampler.size=64]}\n")
    spec = load_study(make_study(tmp_path, variants))
    real = execute.build_trainer

    def build(cfg, *args, run_dir=None, **kwargs):
        trainer = real(cfg, *args, run_dir=run_dir, **kwargs)
        if "crashes" in str(run_dir) and str(tmp_path / "out") in str(run_dir):
            def broken(*a, **k):
                raise RuntimeError("boom")
            trainer.fit = broken
        return trainer

    monkeypatch.setattr(execute, "build_trainer", build)
    events = []
    outcome = run_study(spec, tmp_path / "out", on_event=events.append)
    assert not outcome.interrupted
    assert capsys.readouterr().out == ""  # library use prints nothing
    rows = read_csv(tmp_path / "out" / "study.csv")
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [(r["variant"], r["status"]) for r in rows] == [
        ("base", "ok"), ("diverges", "diverged"), ("crashes", "crashed"), ("queue", "ok")]
    for row in (rows[0], rows[3]):
        assert 0.0 < float(row["knn"]) <= 1.0
        assert row["steps"] == str(STEPS)
        assert float(row["effective_rank"]) > 0 and float(row["embedding_std"]) > 0
        assert row["collapsed"] == "false" and float(row["wall_seconds"]) > 0
    assert rows[3]["overrides"] == "objective.sampler.size=64"
    crashed = json.loads((outcome.runs[2].run_dir / "result.json").read_text())
    assert crashed["status"] == "crashed" and "RuntimeError: boom" in crashed["message"]
    assert (outcome.runs[2].run_dir / "error.txt").is_file()
    table = (tmp_path / "out" / "study.md").read_text()
    assert "| `base` | ok |" in table and "| `diverges` | diverged |" in table
    assert (tmp_path / "out" / "study.png").stat().st_size > 1000
    assert [e.kind for e in events].count("end") == 4 and events[0].kind == "validate"

    # running it again trains nothing
    built.clear()
    events.clear()
    outcome = run_study(spec, tmp_path / "out", on_event=events.append)
    assert built == [] and [e.kind for e in events] == ["skip"] * 4
    assert [outcome.records[r.key].status for r in outcome.runs] == ["ok", "diverged", "crashed", "ok"]


def test_interrupted_study_resumes_without_rerunning_finished_variants(tmp_path, built, monkeypatch):
    spec = load_study(make_study(tmp_path, "  - {name: a}\n  - {name: b, overrides: [optim.lr=0.02]}\n"
                                           "  - {name: c, overrides: [optim.lr=0.03]}\n"))
    real = execute.build_trainer

    def build(cfg, *args, run_dir=None, **kwargs):  # SIGINT in the middle of b's training
        trainer = real(cfg, *args, run_dir=run_dir, **kwargs)
        if run_dir.name.startswith("b-") and run_dir.parent == tmp_path / "out":
            step = trainer.train_step

            def step_then_interrupt(*a, **k):
                logs = step(*a, **k)
                if trainer.global_step == 2:
                    signal.raise_signal(signal.SIGINT)
                return logs
            trainer.train_step = step_then_interrupt
        return trainer

    monkeypatch.setattr(execute, "build_trainer", build)
    first = run_study(spec, tmp_path / "out")
    a, b, c = first.runs
    assert first.interrupted
    assert first.records[a.key].status == "ok"
    assert first.records[b.key].status == "interrupted" and first.records[b.key].steps == 2
    assert c.key not in first.records and not c.run_dir.exists()
    assert (b.run_dir / "checkpoint.pt").is_file()
    statuses = [r["status"] for r in read_csv(tmp_path / "out" / "study.csv")]
    assert statuses == ["ok", "interrupted", "pending"]  # the partial report
    assert [r.state() for r in first.runs] == ["done", "resume", "new"]
    a_result = (a.run_dir / "result.json").read_text()

    monkeypatch.setattr(execute, "build_trainer", real)
    calls = []
    monkeypatch.setattr(runner, "execute_run", lambda run, **kw: calls.append(run.variant) or real_execute(run))
    second = run_study(spec, tmp_path / "out")
    assert not second.interrupted
    assert calls == ["b", "c"]  # a is not run again
    assert (a.run_dir / "result.json").read_text() == a_result
    assert second.records[b.key].status == "ok" and second.records[b.key].steps == STEPS
    assert [r["status"] for r in read_csv(tmp_path / "out" / "study.csv")] == ["ok", "ok", "ok"]


real_execute = execute.execute_run


def test_markdown_table_mean_and_std_over_seeds(tmp_path):
    spec = load_study(make_study(tmp_path, "  - {name: a}\n  - {name: b}\n", extra="seeds: [0, 1]\n"))
    runs = plan_study(spec, tmp_path / "out")
    records = {
        runs[0].key: RunRecord("ok", knn=0.80, effective_rank=10.0, collapsed=False, steps=4),
        runs[1].key: RunRecord("ok", knn=0.90, effective_rank=12.0, collapsed=False, steps=4),
        runs[2].key: RunRecord("ok", knn=0.50, effective_rank=1.5, collapsed=True, collapse_step=30, steps=4),
        runs[3].key: RunRecord("diverged", steps=2, collapsed=False),
    }
    table = markdown_table(study_rows(runs, records))
    lines = table.splitlines()
    assert lines[0] == "| variant | runs | kNN % | eff. rank | steps | collapsed |"
    assert lines[2] == "| `a` | ok 2 | 85.00 ± 7.07 | 11.00 ± 1.41 | 4 ± 0 | no |"
    assert lines[3] == "| `b` | ok 1, diverged 1 | 50.00 | 1.50 | 3 ± 1 | 1/2 (step 30) |"


def test_variants_crossed_with_a_grid_get_a_pivot_table_and_a_heatmap(tmp_path):
    extra = "grid:\n  objective.critic: [{name: cosine, temperature: 0.2}, {name: dot}]\n"
    spec = load_study(make_study(tmp_path, "  - {name: a}\n  - {name: b}\n", extra=extra))
    assert spec.rows == ("a", "b")
    assert spec.columns == ("objective.critic=cosine(temperature=0.2)", "objective.critic=dot")
    runs = plan_study(spec, tmp_path / "out")
    assert [r.variant for r in runs][:2] == ["a/objective.critic=cosine(temperature=0.2)", "a/objective.critic=dot"]
    records = {
        runs[0].key: RunRecord("ok", knn=0.8, collapsed=False, alignment=0.5, uniformity=-2.0),
        runs[1].key: RunRecord("ok", knn=0.5, collapsed=True, collapse_step=30),
        runs[2].key: RunRecord("diverged", steps=3),
    }  # runs[3]: not run yet
    written = write_report(spec, runs, records, tmp_path / "report")
    text = (tmp_path / "report" / "study.md").read_text()
    assert "| variant | `cosine(temperature=0.2)` | `dot` |" in text
    assert "| `a` | 80.0 | 50.0 C |" in text and "| `b` | diverged | pending |" in text
    assert "| align. | unif. |" in text  # the per-variant table carries the monitor's alignment and uniformity
    assert written["heatmap"].stat().st_size > 10_000  # a rendered PNG
    row = read_csv(tmp_path / "report" / "study.csv")[0]
    assert (row["alignment"], row["uniformity"]) == ("0.5", "-2")
