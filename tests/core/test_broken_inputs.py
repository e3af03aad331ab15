"""A new user's broken inputs against `selfsup train` / `eval`: each ends with exit code 2 and
one paragraph naming the key or the file, never a traceback; an existing run is never harmed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from selfsup.cli import main

QUICK = {
    "data": {"dataset": {"name": "digits"}, "batch_size": 64},
    "objective": {"name": "moco", "encoder": {"name": "small_conv", "width": 4}, "embedding_dim": 8,
                  "sampler": {"name": "momentum_queue", "size": 128}},
    "optim": {"name": "sgd", "lr": 0.05},
    "trainer": {"epochs": 1, "max_steps": 3, "progress": False, "eval_before": False, "eval_after": False,
                "log_every": 1, "loggers": ["csv", "jsonl"]},
    "eval": {"linear_probe": False, "plots": False},
}


def pipeline(tmp_path: Path, cfg: dict | str | None = None, name: str = "pipeline.yaml") -> str:
    path = tmp_path / name
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg or QUICK))
    return str(path)


def refused(argv: list[str], capsys) -> str:
    """Run the CLI; assert exit code 2 and no traceback; the error text."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err + out
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one paragraph
    return err


OVERRIDES = [
    ("optim.lr=-0.1", "optim.lr: must be > 0, got -0.1"),
    ("optim.lr=0", "optim.lr: must be > 0, got 0"),
    ("optim.momentum=-1", "optim.momentum: must be >= 0 and <= 1, got -1"),
    ("optim.momentum=1.5", "optim.momentum: must be >= 0 and <= 1, got 1.5"),
    ("optim.weight_decay=-1", "optim.weight_decay: must be >= 0, got -1"),
    ("optim.betas=[0.9,1.5]", "optim.betas: each must be >= 0 and < 1, got [0.9, 1.5]"),
    ("optim.name=adam", "optim.name: expected one of 'sgd', 'adamw', 'lars'"),
    ("schedule.warmup_epochs=-1", "schedule.warmup_epochs: must be >= 0, got -1"),
    ("schedule.min_lr_ratio=2", "schedule.min_lr_ratio: must be >= 0 and <= 1, got 2"),
    ("schedule.name=linear", "schedule.name: expected one of 'cosine', 'constant'"),
    ("trainer.device=bogus", "trainer.device: 'bogus' is not a device"),
    ("trainer.device=cuda", "trainer.device: 'cuda', but this machine has 0 CUDA GPU(s)"),
    ("trainer.device=cuda:3", "trainer.device: 'cuda:3', but this machine has 0 CUDA GPU(s)"),
    ("trainer.epochs=0", "trainer.epochs: must be >= 1, got 0"),
    ("trainer.max_steps=0", "trainer.max_steps: must be >= 1, got 0"),
    ("trainer.max_steps=-1", "trainer.max_steps: must be >= 1, got -1"),
    ("trainer.log_every=0", "trainer.log_every: must be >= 1, got 0"),
    ("trainer.checkpoint_every_epochs=0", "trainer.checkpoint_every_epochs: must be >= 1, got 0"),
    ("trainer.max_minutes=0", "trainer.max_minutes: must be > 0, got 0"),
    ("trainer.grad_clip=0", "trainer.grad_clip: must be > 0, got 0"),
    ("trainer.precision=fp8", "trainer.precision: expected one of"),
    ("trainer.loggers=[csv,wandb]", "trainer.loggers.1.name: unknown logger 'wandb'"),
    ("eval.knn_k=0", "eval.knn_k: must be >= 1, got 0"),
    ("eval.batch_size=0", "eval.batch_size: must be >= 1, got 0"),
    ("eval.knn_temperature=0", "eval.knn_temperature: must be > 0, got 0"),
    ("eval.every_minutes=-1", "eval.every_minutes: must be > 0, got -1"),
    ("eval.every_epochs=0", "eval.every_epochs: must be >= 1, got 0"),
    ("data.batch_size=0", "data.batch_size: must be >= 1, got 0"),
    ("data.batch_size=abc", "data.batch_size: expected int"),
    ("monitor.every=0", "monitor.every: must be >= 1, got 0"),
    ("monitor.probe_size=1", "monitor.probe_size: must be >= 2, got 1"),
    ("monitor.diagnostics=[rank]", "monitor.diagnostics.0.name: unknown diagnostic 'rank'"),
    ("seed=abc", "seed: expected int"),
    ("objective.name=mocco", "objective.name: unknown objective 'mocco'"),
    ("objective.sampler.sizee=3", "objective.sampler.sizee: unknown parameter of sampler 'momentum_queue'. Did you "
                                  "mean 'size'?"),
    ("objective.critic.temperature=0.2", "objective.critic.name: missing; name a registered critic"),
    ("objective.encoder.in_channels=3", "objective.encoder.in_channels: 3, but the data has in_channels 1"),
    ("objective.encoder.image_size=96", "objective.encoder.image_size: 96, but the data has image_size 8"),
    ("objective.embedding_dim=-5", "objective: objective 'moco' rejected its parameters: embedding_dim must be positive"),
    ("objective.embedding_dim=0", "embedding_dim must be positive, got 0"),
    ("objective.encoder=5", "objective.encoder: expected a encoder as {name: ..., parameters...}"),
    ("objective.sampler.size=-4", "objective.sampler: sampler 'momentum_queue' rejected its parameters"),
    ("data.dataset.name=mnist", "data.dataset.name: unknown dataset 'mnist'"),
    ("data.augment.name=three_view", "data.augment.name: unknown transform 'three_view'"),
    ("optimizer.lr=0.1", "unknown section 'optimizer'"),
    ("optim.lr", "is not of the form key.path=value"),
]


@pytest.mark.parametrize("override, message", OVERRIDES, ids=[o for o, _ in OVERRIDES])
def test_bad_override_is_one_paragraph_naming_the_key(tmp_path, capsys, override, message):
    err = refused(["train", pipeline(tmp_path), override, "--run-dir", str(tmp_path / "run")], capsys)
    assert message in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


FILES = [
    ("missing", None, "pipeline file", "does not exist"),
    ("not yaml", "objective: [unclosed", "pipeline.yaml", "not valid YAML"),
    ("a list", "- objective\n- data\n", "pipeline.yaml", "a pipeline must be a mapping of sections"),
    ("no objective", "data: {batch_size: 8}\n", "objective: missing", "name the objective"),
    ("unknown section", "objectiv: {name: moco}\n", "objectiv: unknown section", "Did you mean 'objective'"),
    ("python tag", "objective: !!python/object:os.system {}\n", "pipeline.yaml", "not valid YAML"),
]


@pytest.mark.parametrize("case, text, where, message", FILES, ids=[c for c, *_ in FILES])
def test_bad_pipeline_file_names_the_file_or_key(tmp_path, capsys, case, text, where, message):
    path = str(tmp_path / "nowhere.yaml") if text is None else pipeline(tmp_path, text)
    err = refused(["train", path, "--run-dir", str(tmp_path / "run")], capsys)
    assert where in err and message in err


def test_a_folder_given_as_the_pipeline_is_named_as_a_folder(tmp_path, capsys):
    err = refused(["train", str(tmp_path), "--run-dir", str(tmp_path / "run")], capsys)
    assert f"{tmp_path} is a folder, not a pipeline file" in err


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", pipeline(tmp_path), "--run-dir", str(run)]) == 0
    capsys.readouterr()
    return run


def test_a_fresh_run_never_touches_an_existing_run(tmp_path, capsys, finished_run):
    before = _files(finished_run)
    err = refused(["train", pipeline(tmp_path), "optim.lr=1e6", "--run-dir", str(finished_run)], capsys)
    assert "already holds a run" in err and f"selfsup train --resume {finished_run}" in err and "--overwrite" in err
    assert _files(finished_run) == before  # byte for byte
    # still resumable and evaluable
    assert main(["train", "--resume", str(finished_run), "trainer.max_steps=5"]) == 0
    assert main(["eval", str(finished_run), "eval.linear_probe=false"]) == 0


def test_overwrite_replaces_only_the_run_files(tmp_path, capsys, finished_run):
    (finished_run / "notes.txt").write_text("mine")
    assert main(["train", pipeline(tmp_path), "trainer.max_steps=2", "--run-dir", str(finished_run),
                 "--overwrite"]) == 0
    assert (finished_run / "notes.txt").read_text() == "mine"
    rows = (finished_run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2  # the old run's rows are gone, not appended to


@pytest.mark.parametrize("override, refused_key", [
    ("objective.encoder.width=16", "objective.encoder.width"),
    ("data.batch_size=32", "data.batch_size"),
    ("seed=3", "seed"),
    ("optim.name=adamw", "optim.name"),
])
def test_resume_refuses_what_it_cannot_apply(capsys, finished_run, override, refused_key):
    before = _files(finished_run)
    err = refused(["train", "--resume", str(finished_run), override], capsys)
    assert f"--resume cannot change {refused_key}" in err and "Start a fresh run" in err
    assert _files(finished_run) == before


def test_resume_applies_a_new_learning_rate(tmp_path, capsys, finished_run):
    assert main(["train", "--resume", str(finished_run), "optim.lr=0.5", "trainer.max_steps=5",
                 "schedule.name=constant"]) == 0
    import json

    rows = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows][-2:] == [4, 5] and rows[-1]["lr"] == pytest.approx(0.5)
    assert "lr: 0.5" in (finished_run / "config.yaml").read_text()  # the run folder says what it continued with


def test_resume_refuses_a_pipeline_file_and_overwrite(tmp_path, capsys, finished_run):
    err = refused(["train", pipeline(tmp_path, name="other.yaml"), "--resume", str(finished_run)], capsys)
    assert "with its own config.yaml" in err and "other.yaml" in err
    err = refused(["train", "--resume", str(finished_run), "--overwrite"], capsys)
    assert "--resume continues the run in its folder and --overwrite replaces it" in err


def test_resume_and_eval_of_folders_that_hold_no_run(tmp_path, capsys):
    err = refused(["train", "--resume", str(tmp_path / "empty")], capsys)
    assert "config.yaml" in err and "does not exist" in err
    err = refused(["eval", str(tmp_path / "empty")], capsys)
    assert "config.yaml" in err


def test_a_checkpoint_that_does_not_fit_the_config_is_named(tmp_path, capsys, finished_run):
    config = finished_run / "config.yaml"
    config.write_text(config.read_text().replace("width: 4", "width: 8"))
    err = refused(["eval", str(finished_run)], capsys)
    assert f"the checkpoint {finished_run / 'checkpoint.pt'} does not fit the model" in err
    assert "size mismatch" in err


def test_eval_refuses_model_overrides(capsys, finished_run):
    err = refused(["eval", str(finished_run), "objective.embedding_dim=4"], capsys)
    assert "eval.*, trainer.device and trainer.precision only, not objective.embedding_dim" in err


def test_divergence_before_a_checkpoint_says_none_was_kept(tmp_path, capsys):
    err = refused(["train", pipeline(tmp_path), "optim.lr=1e30", "--run-dir", str(tmp_path / "run")], capsys)
    assert "no checkpoint had been written yet" in err or "not finite" in err


def test_identity_projector_trains(tmp_path, capsys):
    assert main(["train", pipeline(tmp_path), "objective.projector=none", "--run-dir", str(tmp_path / "run")]) == 0


DATA_CASES = {
    "text renamed .npz": (lambda p: p.write_text("x,y\n1,2\n"), "not an .npz archive", "first bytes"),
    "label of a billion": (lambda p: __import__("numpy").savez(
        p, x_train=__import__("numpy").zeros((20, 8, 8), "uint8"), y_train=__import__("numpy").full(20, 10**9)),
        "the largest label is 1000000000", "class indices"),
    "missing key": (lambda p: __import__("numpy").savez(p, images=__import__("numpy").zeros((20, 8, 8), "uint8")),
                    "key 'x_train' not found", "keys present: 'images'"),
    "missing file": (None, "file not found", "datasets are not downloaded"),
    "one image": (lambda p: __import__("numpy").savez(p, x_train=__import__("numpy").zeros((1, 8, 8), "uint8"),
                                                      y_train=__import__("numpy").zeros(1, "int64")),
                  "keys 'x_train'/'y_train'", "cannot split 1 sample(s)"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_files_name_the_file(tmp_path, capsys, case):
    make, *messages = DATA_CASES[case]
    data = tmp_path / "data.npz"
    if make is not None:
        make(data)
    err = refused(["train", pipeline(tmp_path), f"data.dataset={{name: arrays, path: {data}}}",
                   "--run-dir", str(tmp_path / "run")], capsys)
    assert str(data) in err and all(m in err for m in messages), err


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_checkpoint_that_would_run_code_is_refused_without_advice_to_load_it_unsafely(tmp_path, capsys,
                                                                                        finished_run):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    (finished_run / "checkpoint.pt").write_bytes(pickle.dumps({"model": Payload()}))
    err = refused(["eval", str(finished_run)], capsys)
    assert "is not a plain tensor checkpoint" in err and "refused" in err
    assert "weights_only=False" not in err and "pwned" not in capsys.readouterr().out


def test_a_failed_checkpoint_write_leaves_the_old_one_and_no_temporary_file(tmp_path, capsys, finished_run,
                                                                          monkeypatch):
    import torch

    good = (finished_run / "checkpoint.pt").read_bytes()

    def full_disk(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    err = refused(["train", "--resume", str(finished_run), "trainer.max_steps=5"], capsys)
    assert f"could not write {finished_run / 'checkpoint.pt'}" in err and "Nothing was replaced" in err
    assert (finished_run / "checkpoint.pt").read_bytes() == good
    assert not (finished_run / "checkpoint.pt.tmp").exists()


def test_a_run_folder_that_cannot_be_created_is_named(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # fails for root too, unlike a read-only parent
    err = refused(["train", pipeline(tmp_path), "--run-dir", str(blocker / "run")], capsys)
    assert f"cannot create the run folder {blocker / 'run'}: Not a directory" in err
