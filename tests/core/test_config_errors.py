"""Broken pipelines: each gives a one-paragraph error naming the problem, never a traceback."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from selfsup.cli import main

GOOD = {
    "data": {"dataset": {"name": "digits"}, "batch_size": 64},
    "objective": {"name": "moco", "encoder": {"name": "small_conv", "width": 8},
                  "critic": {"name": "dot", "temperature": 0.2}},
    "optim": {"name": "sgd", "lr": 0.05},
    "trainer": {"epochs": 1, "max_steps": 1, "progress": False, "eval_before": False, "eval_after": False},
}


def write(tmp_path: Path, cfg) -> str:
    path = tmp_path / "pipeline.yaml"
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    return str(path)


def variant(**changes):
    cfg = yaml.safe_load(yaml.safe_dump(GOOD))
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return cfg


def bad_npz(tmp_path: Path) -> str:
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((10, 5), np.uint8), y_train=np.zeros(10, np.int64))
    return str(path)


CASES = {
    "typo in a key": (lambda t: variant(objective__critic={"name": "dot", "temperture": 0.2}),
                      ["objective.critic.temperture", "Did you mean 'temperature'"]),
    "unknown component": (lambda t: variant(objective__encoder={"name": "small_convnet"}),
                          ["objective.encoder.name", "unknown encoder 'small_convnet'", "'small_conv'"]),
    "wrong type": (lambda t: variant(optim__lr="fast"), ["optim.lr", "expected float", "'fast'"]),
    "missing required value": (lambda t: variant(objective__encoder={"name": "timm"}),
                               ["objective.encoder.model", "missing required parameter"]),
    "unknown choice": (lambda t: variant(optim__name="adam"), ["optim.name", "one of 'sgd', 'adamw', 'lars'"]),
    "unknown section": (lambda t: {**GOOD, "optimizer": {"lr": 0.1}}, ["optimizer", "Did you mean 'optim'"]),
    "import path instead of a name": (lambda t: variant(objective__name="torch.nn:Linear"),
                                      ["objective.name", "unknown objective 'torch.nn:Linear'"]),
    "missing data file": (lambda t: variant(data__dataset={"name": "arrays", "path": str(t / "nope.npz")}),
                          ["nope.npz"]),
    "wrong array shape": (lambda t: variant(data__dataset={"name": "arrays", "path": bad_npz(t)}),
                          ["bad.npz", "x_train"]),
    "batch larger than the data": (lambda t: variant(data__batch_size=5000), ["data.batch_size", "5000"]),
    "invalid yaml": (lambda t: "data: [unclosed\n", ["not valid YAML"]),
    "no objective": (lambda t: {"data": GOOD["data"]}, ["objective: missing"]),
    "placeholder left in": (lambda t: variant(objective__critic={"name": "dot", "temperature": "???"}),
                            ["objective.critic.temperature"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_pipeline_gives_one_paragraph(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make, expected = CASES[case]
    code = main(["train", write(tmp_path, make(tmp_path))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ")
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0, f"not one paragraph: {err!r}"
    for fragment in expected:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def test_bad_override_form(tmp_path, capsys):
    code = main(["train", write(tmp_path, GOOD), "optim.lr"])
    err = capsys.readouterr().err
    assert code == 2 and "optim.lr" in err and "key.path=value" in err


def test_override_to_unknown_section(tmp_path, capsys):
    code = main(["train", write(tmp_path, GOOD), "optimizer.lr=0.1"])
    err = capsys.readouterr().err
    assert code == 2 and "Did you mean 'optim'" in err


def test_missing_pipeline_file(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_override_applies(tmp_path, capsys):
    assert main(["config", "show", write(tmp_path, GOOD), "optim.lr=0.5", "trainer.epochs=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["optim"]["lr"] == 0.5 and shown["trainer"]["epochs"] == 3
    assert shown["schedule"]["name"] == "cosine"  # defaults filled in
