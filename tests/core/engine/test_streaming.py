"""Data larger than memory: the streaming loader against the in-memory one, resume, torchrun,
a memory cap, the decode cache, unreadable images and unlabelled folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from selfsup.config import DataConfig
from selfsup.data import StreamedImages
from selfsup.engine import build_trainer
from selfsup.engine.checkpoint import load
from selfsup.engine.data_setup import prepare_data
from selfsup.engine.loader import InMemoryBatches, StreamingBatches
from selfsup.errors import ConfigError, DataError
from selfsup.plugins.data.folders import image_folder
from support import fit_until, torchrun

WORLD = 2


def digits_folder(root: Path, count: int = 320, classes: bool = True) -> Path:
    """The first ``count`` sklearn digits as 8x8 grey PNGs: ``root/<digit>/<i>.png`` or flat."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images[:count] * (255 / 16)).astype(np.uint8)
    for i, (image, label) in enumerate(zip(images, bunch.target[:count])):
        folder = root / str(label) if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    return root


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory) -> Path:
    return digits_folder(tmp_path_factory.mktemp("digits") / "images")


def pipeline(root: Path, out: Path, loader: str, **trainer) -> dict:
    """MoCo on the digits folder, no augmentation randomness (identity views)."""
    return {
        "seed": 3,
        "data": {"dataset": {"name": "image_folder", "root": str(root), "image_size": 8, "channels": 1,
                             "test_fraction": 0.25},
                 "augment": {"name": "identity"}, "batch_size": 32, "loader": loader, "workers": 1},
        "objective": {"name": "moco", "encoder": {"name": "small_conv", "width": 4}, "embedding_dim": 8,
                      "sampler": {"name": "momentum_queue", "size": 64}, "symmetric": True, "shuffle_bn": False,
                      "split_bn": trainer.pop("split_bn", 1)},
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "trainer": {"epochs": 2, "progress": False, "eval_before": False, "eval_after": False, "out_dir": str(out),
                    "log_every": 5, **trainer},
        "eval": {"linear_probe": False, "plots": False, "knn_k": 5},
    }


fit = fit_until


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


# --------------------------------------------------------------------------- the loaders agree
def test_streamed_batches_equal_the_in_memory_batches(digits_root):
    split = image_folder(str(digits_root), image_size=8, channels=1, test_fraction=0).train
    memory = prepare_data(image_folder(str(digits_root), image_size=8, channels=1, test_fraction=0),
                          DataConfig(loader="memory", cache_dir=None)).train
    device = torch.device("cpu")
    streamed = StreamingBatches(split, 64, device, seed=5, workers=1, world_size=2, rank=1)
    in_memory = InMemoryBatches(memory, 64, device, seed=5, world_size=2, rank=1)
    assert len(streamed) == len(in_memory) == 5
    for epoch in (0, 1):
        pairs = list(zip(streamed.epoch(epoch, start_batch=2), in_memory.epoch(epoch, start_batch=2), strict=True))
        assert len(pairs) == 3
        for (x, y, i), (x_ref, y_ref, i_ref) in pairs:
            assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32
            assert torch.equal(i, i_ref) and torch.equal(y, y_ref) and torch.equal(x, x_ref)
    assert memory.images.float().std() > 10  # real pixels, not zeros


def test_a_run_resumed_mid_epoch_while_streaming_ends_with_the_same_weights(digits_root, tmp_path, registry):
    cfg = pipeline(digits_root, tmp_path, "stream")  # 240 training images: 7 steps per epoch, 14 in all
    full, full_result = fit(cfg, tmp_path / "full", registry)
    assert isinstance(full.loader, StreamingBatches) and full_result.steps == 14
    _, stopped = fit(cfg, tmp_path / "split", registry, stop_at=4)
    assert stopped.interrupted and stopped.steps == 4
    resumed, resumed_result = fit(cfg, tmp_path / "split", registry, resume=True)
    assert resumed_result.steps == 14
    assert_same_state(full.objective.state_dict(), resumed.objective.state_dict())
    # and the in-memory loader trains the very same model from the same folder
    memory, _ = fit(pipeline(digits_root, tmp_path, "memory"), tmp_path / "memory", registry)
    assert isinstance(memory.loader, InMemoryBatches)
    assert_same_state(full.objective.state_dict(), memory.objective.state_dict())


@pytest.mark.distributed
def test_two_streaming_processes_equal_one_process_with_the_same_global_batch(digits_root, tmp_path, registry):
    two_cfg = pipeline(digits_root, tmp_path, "stream", max_steps=6, run_name="two")
    OmegaConf.save(OmegaConf.create(two_cfg), tmp_path / "pipeline.yaml")
    torchrun(["-m", "selfsup.cli", "train", str(tmp_path / "pipeline.yaml")], cwd=tmp_path)
    two = load(tmp_path / "two" / "checkpoint.pt")
    assert two["world_size"] == WORLD and two["progress"]["global_step"] == 6
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # BN statistics per half batch, as per rank
        one, _ = fit(pipeline(digits_root, tmp_path, "stream", max_steps=6, split_bn=WORLD), tmp_path / "one",
                     registry)
    finally:
        torch.set_num_threads(previous)
    # the trained parameters and the key queue (rank 0's BN running statistics saw half the batch)
    expected = {k: v for k, v in one.objective.state_dict().items()
                if k in dict(one.objective.named_parameters()) or k.startswith("sampler.")}
    assert "sampler.keys" in expected
    for key, value in expected.items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert (two["model"]["encoder.blocks.0.0.weight"] - build_trainer(
        OmegaConf.create(two_cfg), registry, run_dir=tmp_path / "init").objective.encoder.blocks[0][0].weight
    ).abs().max() > 1e-3  # it trained


# --------------------------------------------------------------------------- a memory cap
MEMORY_CAPPED = textwrap.dedent('''
    import resource, sys
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from selfsup.engine import build_trainer

    root, out, decoded_gb = sys.argv[1], sys.argv[2], float(sys.argv[3])
    torch.set_num_threads(1)
    cfg = {"seed": 0,
           "data": {"dataset": {"name": "image_folder", "root": root, "image_size": 224, "test_fraction": 0},
                    "augment": {"name": "identity"}, "batch_size": 8, "loader": "auto", "memory_budget_gb": 0.05,
                    "workers": 0, "cache_dir": None},
           "objective": {"name": "simclr", "encoder": {"name": "small_conv", "width": 4}},
           "trainer": {"epochs": 1, "max_steps": 3, "progress": False, "eval_before": False, "eval_after": False,
                       "retain_host_memory": False, "out_dir": out, "run_name": "capped"},
           "monitor": {"diagnostics": []}}
    trainer = build_trainer(OmegaConf.create(cfg))
    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
    cap = size + int(0.6e9)  # what the process has mapped now plus 0.6 GB: less than the decoded images
    assert cap - size < decoded_gb * 1e9, (cap - size, decoded_gb)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:  # the cap bites: holding the decoded images is refused
        np.empty(int(decoded_gb * 1e9), dtype=np.uint8).fill(1)
        raise SystemExit("the memory cap does not hold")
    except MemoryError:
        pass
    result = trainer.fit()
    print("steps", result.steps, type(trainer.loader).__name__)
''')


def test_streaming_trains_under_a_memory_cap_smaller_than_the_decoded_images(tmp_path):
    # 6,000 small JPEGs (5 MB on disk) that decode at 224 px, RGB, to 6000 x 3 x 224 x 224 bytes = 0.9 GB
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(6000):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"{i:05d}.jpg")
    decoded_gb = 6000 * 3 * 224 * 224 / 1e9
    script = tmp_path / "capped.py"
    script.write_text(MEMORY_CAPPED)
    done = subprocess.run([sys.executable, str(script), str(root), str(tmp_path), str(decoded_gb)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "steps 3 StreamingBatches" in done.stdout


# --------------------------------------------------------------------------- cache, bad images, no labels
def test_the_decode_cache_is_read_back_and_follows_the_files(digits_root, tmp_path):
    cfg = DataConfig(loader="memory", cache_dir=str(tmp_path / "cache"), workers=0)
    first = prepare_data(image_folder(str(digits_root), image_size=8, channels=1), cfg)
    assert not any("cache" in note for note in first.notes)
    second = prepare_data(image_folder(str(digits_root), image_size=8, channels=1), cfg)
    assert any("read from the cache" in note for note in second.notes)
    assert torch.equal(first.train.images, second.train.images) and torch.equal(first.test.images, second.test.images)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # train and test
    # a file that changes (new size and mtime) is decoded again
    changed = tmp_path / "changed"
    digits_folder(changed, count=40)
    before = prepare_data(image_folder(str(changed), image_size=8, channels=1, test_fraction=0), cfg).train
    victim = sorted((changed / "0").glob("*.png"))[0]
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(victim)
    os.utime(victim, ns=(1, 1))
    after = prepare_data(image_folder(str(changed), image_size=8, channels=1, test_fraction=0), cfg)
    assert not any("cache" in note for note in after.notes)
    row = after.train.names.index(str(victim.relative_to(changed)))
    assert int(after.train.images[row].min()) == 255 and not torch.equal(before.images[row], after.train.images[row])


def test_unreadable_images_fail_with_the_path_or_are_skipped(tmp_path, registry):
    root = digits_folder(tmp_path / "broken", count=64, classes=False)
    bad = root / "00003.png"
    bad.write_bytes(b"\xff\xd8 not really an image")
    flat = image_folder(str(root), image_size=8, channels=1)
    assert flat.test is None and bool((flat.train.labels == -1).all()) and flat.class_names == []
    with pytest.raises(DataError, match=str(bad)):
        prepare_data(flat, DataConfig(loader="memory", cache_dir=None))
    kept = prepare_data(flat, DataConfig(loader="memory", cache_dir=None, on_bad_image="skip"))
    assert len(kept.train) == 63 and "00003.png" not in kept.train.names
    assert any("skipped 1 unreadable" in note and str(bad) in note for note in kept.notes)
    # streaming: the next readable image takes its place, the same one on every pass
    streamed = prepare_data(flat, DataConfig(loader="stream", on_bad_image="skip", workers=0)).train
    heard: list[str] = []
    loader = StreamingBatches(streamed, 64, torch.device("cpu"), seed=0, on_skipped=heard.append)
    for _ in range(2):
        (_, _, index), = list(loader.epoch(0))
        assert sorted(index.tolist()).count(4) == 2 and 3 not in index.tolist()
    assert loader.skipped == 1 and len(heard) == 1 and str(bad) in heard[0]
    assert streamed.select(torch.tensor([3, 0])).names == ["00004.png", "00000.png"]  # a probe, as the monitor's
    with pytest.raises(DataError, match="00003.png"):
        prepare_data(flat, DataConfig(loader="stream", workers=0)).train.select(torch.tensor([3]))
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    for i in range(3):
        (garbage / f"{i}.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="none could be read"):  # skip, and nothing is left
        prepare_data(image_folder(str(garbage), image_size=8), DataConfig(loader="memory", cache_dir=None,
                                                                          on_bad_image="skip"))
    failing = StreamingBatches(prepare_data(flat, DataConfig(loader="stream", workers=0)).train, 64,
                               torch.device("cpu"), seed=0)
    with pytest.raises(DataError, match="00003.png.*on_bad_image: skip"):
        list(failing.epoch(0))


def test_an_unlabelled_folder_trains_and_evaluates_on_eval_data(digits_root, tmp_path, registry, capsys):
    flat = digits_folder(tmp_path / "flat", count=96, classes=False)
    cfg = pipeline(flat, tmp_path, "memory", epochs=1, eval_after=True)
    del cfg["data"]["dataset"]["test_fraction"]
    trainer, result = fit(cfg, tmp_path / "skipped", registry)
    assert trainer.eval_data is None and result.after is None and result.steps == 3
    assert not (tmp_path / "skipped" / "embedding_tsne.png").exists()
    cfg["eval"]["data"] = {"name": "image_folder", "root": str(digits_root), "image_size": 8, "channels": 1}
    trainer, result = fit(cfg, tmp_path / "evaluated", registry)
    assert trainer.eval_data.has_labels and 0.3 < result.after["knn_acc"] <= 1.0
    summary = json.loads((tmp_path / "evaluated" / "metrics.json").read_text())
    assert summary["after"]["knn_acc"] == result.after["knn_acc"]


def test_selfsup_train_on_an_unlabelled_folder_says_evaluation_is_skipped(tmp_path):
    flat = digits_folder(tmp_path / "flat", count=96, classes=False)
    done = subprocess.run([sys.executable, "-m", "selfsup.cli", "train", "examples/moco_digits.yaml",
                           f"data.dataset={{name: image_folder, root: {flat}, image_size: 8, channels: 1}}",
                           "data.batch_size=32", "trainer.max_steps=2", f"trainer.out_dir={tmp_path}",
                           "trainer.progress=false", "data.cache_dir=null"],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "evaluation skipped" in done.stdout + done.stderr and "eval.data" in done.stdout + done.stderr


def test_bad_loader_settings_and_eval_data_are_config_errors(digits_root, tmp_path, registry):
    cfg = pipeline(digits_root, tmp_path, "stream")
    cfg["data"]["dataset"] = {"name": "digits"}
    with pytest.raises(ConfigError, match="data.loader: stream .* already held in memory"):
        build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "a")
    cfg = pipeline(digits_root, tmp_path, "memory")
    cfg["eval"]["data"] = {"name": "image_folder", "root": str(digits_root), "image_size": 16, "channels": 1}
    with pytest.raises(ConfigError, match=r"eval.data: images of shape \[1, 16, 16\]"):
        build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "b")
    flat = digits_folder(tmp_path / "flat", count=40, classes=False)
    cfg["eval"]["data"] = {"name": "image_folder", "root": str(flat), "image_size": 8, "channels": 1}
    with pytest.raises(ConfigError, match="eval.data: .* no labelled"):
        build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "c")
