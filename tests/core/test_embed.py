"""Embeddings out: ``selfsup.load_encoder``, ``embedding_function``, ``selfsup embed`` and the
timm / torchvision round trips of the exported backbone."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from support import tiny_pipeline
from torch import nn

import selfsup
from selfsup.cli import main
from selfsup.config import load_pipeline
from selfsup.engine import build_trainer
from selfsup.engine import checkpoint as ckpt
from selfsup.errors import ConfigError, SelfsupError
from selfsup.export import InputSpec, embedding_function

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def finished_run(trainer) -> Path:
    """Train, and make sure the run folder holds the full export (encoder.json too)."""
    trainer.fit()
    if not (trainer.run_dir / ckpt.ENCODER_MANIFEST_NAME).exists():  # until the trainer writes it itself
        ckpt.write_encoder_manifest(trainer.objective, trainer.data.context(), trainer.config, trainer.run_dir)
    trainer.objective.eval()
    return trainer.run_dir


@torch.no_grad()
def evaluation_embeddings(trainer, split: str = "test") -> np.ndarray:
    """What the evaluation computes: ``objective.embed`` of the split."""
    return trainer.objective.embed(getattr(trainer.data, split).as_float("cpu")).numpy()


@pytest.fixture(scope="module")
def moco(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("moco")
    trainer = build_trainer(OmegaConf.create(tiny_pipeline(tmp, trainer__max_steps=2)), run_dir=tmp / "run")
    finished_run(trainer)
    return trainer


@pytest.fixture(scope="module")
def dim(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dim")
    cfg = load_pipeline(EXAMPLES / "dim_digits.yaml", [
        "trainer.max_steps=2", "trainer.progress=false", "trainer.eval_before=false", "trainer.eval_after=false",
        "data.batch_size=16", "objective.local_critic.hidden_dim=16", "objective.local_critic.embedding_dim=16",
        "objective.global_critic.hidden_dim=16", "objective.prior.hidden_dims=[16,8]", f"trainer.out_dir={tmp}",
        "objective.encoder.fc_dim=32", "objective.encoder.out_dim=12",
    ])
    trainer = build_trainer(cfg, run_dir=tmp / "run")
    finished_run(trainer)
    return trainer


def embed_cli(*args: str) -> int:
    return main(["embed", *map(str, args), "--no-progress"])


# --------------------------------------------------------------------------- end to end
def test_embed_run_test_split_equals_the_evaluation(moco, tmp_path):
    out = tmp_path / "e.npy"
    assert embed_cli(moco.run_dir, "run", "--split", "test", "--out", out) == 0
    embeddings = np.load(out)
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(moco.data.test), 64)
    np.testing.assert_allclose(embeddings, evaluation_embeddings(moco), rtol=1e-5, atol=1e-6)
    assert (tmp_path / "e.names.txt").read_text().splitlines() == [str(i) for i in range(len(moco.data.test))]
    np.testing.assert_array_equal(np.load(tmp_path / "e.labels.npy"), moco.data.test.labels.numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.labels.npy", "e.names.txt", "e.npy"]  # no .tmp left


def test_load_encoder_is_the_trained_encoder_with_its_input_spec(moco):
    encoder = selfsup.load_encoder(moco.run_dir)
    assert isinstance(encoder, selfsup.Encoder) and not encoder.training
    assert encoder.input_spec == InputSpec(channels=1, image_size=8, value_range=(0.0, 1.0), layout="NCHW")
    assert encoder.embed_layer == "global" and encoder.layer_names == ("global",)
    images = moco.data.test.images[:32]  # uint8: prepare divides by 255, as the trainer does
    with torch.no_grad():
        ours = embedding_function(encoder)(encoder.input_spec.prepare(images))
        theirs = moco.objective.embed(images.float() / 255)
    torch.testing.assert_close(ours, theirs)
    manifest = json.loads((moco.run_dir / "encoder.json").read_text())
    assert manifest["encoder"] == {"name": "small_conv", "width": 8, "in_channels": 1, "image_size": 8}
    assert manifest["input"] == {"channels": 1, "image_size": 8, "value_range": [0, 1]}
    assert manifest["library"] is None


def test_a_run_without_encoder_json_is_rebuilt_from_its_config(moco, tmp_path):
    old = tmp_path / "old_run"
    old.mkdir()
    for name in ("config.yaml", "encoder.safetensors"):
        shutil.copy(moco.run_dir / name, old / name)
    encoder = selfsup.load_encoder(old)
    assert encoder.input_spec == InputSpec(1, 8)
    with torch.no_grad():
        np.testing.assert_allclose(embedding_function(encoder)(moco.data.test.as_float()).numpy(),
                                   evaluation_embeddings(moco), rtol=1e-5, atol=1e-6)


def test_npz_train_split_and_a_channel_mismatch(moco, tmp_path, capsys):
    x_train, y_train = moco.data.train.images[:50, 0].numpy(), moco.data.train.labels[:50].numpy()  # [N, 8, 8] grey
    np.savez(tmp_path / "grey.npz", x_train=x_train, y_train=y_train)
    assert embed_cli(moco.run_dir, tmp_path / "grey.npz", "--split", "train", "--out", tmp_path / "g.npy") == 0
    np.testing.assert_allclose(np.load(tmp_path / "g.npy"), evaluation_embeddings(moco, "train")[:50],
                               rtol=1e-5, atol=1e-6)
    # the default split is x_test, which this file lacks
    assert embed_cli(moco.run_dir, tmp_path / "grey.npz", "--out", tmp_path / "t.npy") == 2
    assert "x_test" in capsys.readouterr().err and not (tmp_path / "t.npy").exists()
    rgb = np.repeat(x_train[:, None], 3, axis=1)  # [N, 3, 8, 8] into a grey-trained encoder
    np.savez(tmp_path / "rgb.npz", x_test=rgb, y_test=y_train)
    assert embed_cli(moco.run_dir, tmp_path / "rgb.npz", "--out", tmp_path / "r.npy") == 2
    err = capsys.readouterr().err
    assert "3x8x8" in err and "1x8x8" in err and str(tmp_path / "rgb.npz") in err
    assert not (tmp_path / "r.npy").exists()


def test_folder_and_npy_are_embedded_whole_with_names(moco, tmp_path, capsys):
    image = pytest.importorskip("PIL.Image")
    pixels = moco.data.test.images[:6, 0].numpy()  # [6, 8, 8] uint8 grey
    folder = tmp_path / "photos"
    for i, px in enumerate(pixels):
        (folder / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        image.fromarray(px, mode="L").save(folder / f"class{i % 2}" / f"img{i}.png")
    assert embed_cli(moco.run_dir, folder, "--out", tmp_path / "f.npy") == 0
    names = (tmp_path / "f.names.txt").read_text().splitlines()
    assert sorted(names) == sorted(f"class{i % 2}/img{i}.png" for i in range(6))
    order = [int(Path(n).stem[3:]) for n in names]
    np.testing.assert_allclose(np.load(tmp_path / "f.npy"), evaluation_embeddings(moco)[order], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / "f.labels.npy"), [i % 2 for i in order])
    assert embed_cli(moco.run_dir, folder, "--split", "test", "--out", tmp_path / "t.npy") == 2
    assert "embedded whole" in capsys.readouterr().err and not (tmp_path / "t.npy").exists()

    np.save(tmp_path / "images.npy", pixels)
    assert embed_cli(moco.run_dir, tmp_path / "images.npy", "--out", tmp_path / "n.npy") == 0
    np.testing.assert_allclose(np.load(tmp_path / "n.npy"), evaluation_embeddings(moco)[:6], rtol=1e-5, atol=1e-6)
    assert (tmp_path / "n.names.txt").read_text().splitlines() == [str(i) for i in range(6)]
    assert not (tmp_path / "n.labels.npy").exists()  # unlabelled: no labels file


# --------------------------------------------------------------------------- layers (DIM)
def test_dim_layers(dim, tmp_path, capsys):
    assert embed_cli(dim.run_dir, "run", "--out", tmp_path / "code.npy") == 0
    code = np.load(tmp_path / "code.npy")
    assert code.shape == (len(dim.data.test), 12)  # the code: what the evaluation used (embed_layer: code)
    np.testing.assert_allclose(code, evaluation_embeddings(dim), rtol=1e-5, atol=1e-6)
    assert embed_cli(dim.run_dir, "run", "--layer", "fc", "--out", tmp_path / "fc.npy") == 0
    assert np.load(tmp_path / "fc.npy").shape == (len(dim.data.test), 32)  # fc_dim
    assert embed_cli(dim.run_dir, "run", "--layer", "fcc", "--out", tmp_path / "x.npy") == 2
    err = capsys.readouterr().err
    assert "'fcc'" in err and "global, local, conv, fc, code" in err and not (tmp_path / "x.npy").exists()
    with pytest.raises(ConfigError, match="Layers available: global, local, conv, fc, code"):
        embedding_function(selfsup.load_encoder(dim.run_dir), "nope")


def test_dim_default_encoder_is_found_in_the_registry_and_embed_layer_recorded(registry, tmp_path):
    from selfsup.config import build

    context = {"in_channels": 1, "image_size": 8, "num_classes": 10, "num_train": 100}
    objective = build(registry, "objective", {"name": "dim", "embed_layer": "fc"}, "objective", context=context)
    manifest = ckpt.write_encoder_manifest(objective, context, {"objective": {"name": "dim", "embed_layer": "fc"}},
                                           tmp_path, registry)
    assert manifest["encoder"] == {"name": "dim_conv", "in_channels": 1, "image_size": 8}
    assert manifest["embed_layer"] == "fc" and manifest["layers"] == ["local", "conv", "fc", "code"]
    assert json.loads((tmp_path / "encoder.json").read_text()) == manifest
    # loaded back, the default representation is the run's embed_layer (what objective.embed used)
    ckpt.export_encoder(objective.encoder, tmp_path / "encoder.safetensors")
    OmegaConf.save(OmegaConf.create({"objective": {"name": "dim", "embed_layer": "fc"}}), tmp_path / "config.yaml")
    encoder = selfsup.load_encoder(tmp_path)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(embedding_function(encoder)(x), objective.eval().embed(x))
        assert embedding_function(encoder, "global")(x).shape == (5, 64)


# --------------------------------------------------------------------------- library round trips
def test_timm_round_trip(tmp_path):
    timm = pytest.importorskip("timm")
    cfg = tiny_pipeline(tmp_path, trainer__max_steps=1, data__batch_size=16,
                        objective__encoder={"name": "timm", "model": "test_resnet"})
    trainer = build_trainer(OmegaConf.create(cfg), run_dir=tmp_path / "run")
    run_dir = finished_run(trainer)
    library = json.loads((run_dir / "encoder.json").read_text())["library"]
    assert library["name"] == "timm" and library["model"] == "test_resnet"
    net = timm.create_model("test_resnet", pretrained=False, num_classes=0, in_chans=1)
    net.load_state_dict(load_file(run_dir / "backbone.safetensors"))  # strict
    net.eval()
    x = trainer.data.test.as_float("cpu")[:16]
    with torch.no_grad():
        theirs = net(x)
        assert not torch.allclose(theirs, timm.create_model("test_resnet", num_classes=0, in_chans=1).eval()(x))
        torch.testing.assert_close(theirs, selfsup.load_encoder(run_dir)(x).global_)


class _Holder(nn.Module):
    """An objective-like module: the export reads its ``encoder``."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder


def test_torchvision_round_trip(registry, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from selfsup.config import build

    context = {"in_channels": 1, "image_size": 8}
    encoder = build(registry, "encoder", {"name": "resnet", "arch": "resnet18"}, "encoder", context=context).eval()
    manifest = ckpt.write_encoder_manifest(_Holder(encoder), context, {"objective": {
        "name": "moco", "encoder": {"name": "resnet", "arch": "resnet18"}}}, tmp_path, registry)
    assert manifest["library"]["name"] == "torchvision" and manifest["library"]["model"] == "resnet18"
    net = getattr(torchvision.models, manifest["library"]["model"])(**manifest["library"]["kwargs"])
    for attribute, expression in manifest["library"]["changes"].items():
        setattr(net, attribute, eval(expression, {"torch": torch}))
    net.load_state_dict(load_file(tmp_path / "backbone.safetensors"))  # strict
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), encoder(x).global_)


# --------------------------------------------------------------------------- bad inputs
def _bad(capsys, *args) -> str:
    assert embed_cli(*args) == 2
    return capsys.readouterr().err


def test_bad_inputs_are_one_paragraph_errors_and_write_nothing(moco, tmp_path, capsys, monkeypatch):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    missing = tmp_path / "no_such_run"
    assert str(missing) in _bad(capsys, missing, "run", "--out", out_dir / "e.npy")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(moco.run_dir / "config.yaml", unfinished / "config.yaml")
    err = _bad(capsys, unfinished, "run", "--out", out_dir / "e.npy")
    assert str(unfinished) in err and "encoder.safetensors" in err and "--resume" in err
    err = _bad(capsys, moco.run_dir, "run", "--out", tmp_path / "missing" / "e.npy")
    assert str(tmp_path / "missing") in err and "does not exist" in err
    err = _bad(capsys, moco.run_dir, "run", "--out", out_dir / "e.csv")
    assert str(out_dir / "e.csv") in err and ".npy" in err
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # not installed
    err = _bad(capsys, moco.run_dir, "run", "--out", out_dir / "e.parquet")
    assert str(out_dir / "e.parquet") in err and "pip install pyarrow" in err
    assert not any(out_dir.iterdir()) and not (tmp_path / "missing").exists()
    with pytest.raises(SelfsupError, match="does not exist"):
        selfsup.load_encoder(missing)


def test_weights_that_do_not_fit_and_an_objective_without_encoder(moco, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(moco.run_dir, run)
    manifest = json.loads((run / "encoder.json").read_text())
    manifest["encoder"]["width"] = 4
    (run / "encoder.json").write_text(json.dumps(manifest))
    with pytest.raises(SelfsupError, match=r"encoder\.safetensors does not fit the SmallConvNet.*size mismatch"):
        selfsup.load_encoder(run)
    ckpt.write_encoder_manifest(nn.Linear(2, 2), {"in_channels": 1, "image_size": 8}, {}, run)
    with pytest.raises(SelfsupError, match="has no separate encoder"):
        selfsup.load_encoder(run)


def test_parquet_out(moco, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    assert embed_cli(moco.run_dir, "run", "--out", tmp_path / "e.parquet") == 0
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.column_names == ["name", "label", "embedding"]
    np.testing.assert_allclose(np.array(table.column("embedding").to_pylist(), dtype=np.float32),
                               evaluation_embeddings(moco), rtol=1e-5, atol=1e-6)
    assert table.column("name").to_pylist()[:3] == ["0", "1", "2"]
