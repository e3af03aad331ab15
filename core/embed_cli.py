"""``selfsup embed RUN_DIR DATA --out embeddings.npy``: a finished run's embeddings of any data.

DATA is ``run`` (the run's own dataset, ``--split test`` by default), an ``.npz`` file
(dataset ``arrays``: ``x_test``/``y_test`` by default, ``--split train`` for
``x_train``/``y_train``), a folder of images (``image_folder``), a ``.npy`` uint8 image array
(``npy_images``) or WebDataset tar shards, one ``.tar`` or a brace/glob pattern
(``image_shards``). Folders, ``.npy`` and shards are embedded whole.

Writes ``OUT`` (``.npy``: a float32 ``[N, D]`` array; ``.parquet``: columns ``name``,
``label`` when known, ``embedding``), ``<stem>.names.txt`` (one line per row: the file's path
relative to the data root, or the row index) and ``<stem>.labels.npy`` when labels are known.
Every output is written to a temporary file and renamed, so nothing half-written is left.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import StreamedImages
from .errors import ConfigError, DataError, SelfsupError

FORMATS = (".npy", ".parquet")
#: Characters that make DATA a pattern of shards (``shard-{000..009}.tar``, ``shards/*.tar``).
PATTERN_CHARS = "{*?["


@dataclass
class EmbedResult:
    """What :func:`embed` wrote: ``out`` ``[rows, dim]``, and the names (and labels) files."""

    out: Path
    rows: int
    dim: int
    names: Path
    labels: Path | None


# --------------------------------------------------------------------------- checks
def check_out(out: Path) -> str:
    """The output format (``.npy`` or ``.parquet``) of ``out``, or a :class:`SelfsupError`
    naming the path when it cannot be written; checked before anything is computed."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise SelfsupError(
            f"--out {out}: unsupported file type {suffix or '(no suffix)'!r}; name the output .npy (a float32 "
            "[N, D] array) or .parquet. Nothing was computed."
        )
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise SelfsupError(
                f"--out {out}: writing .parquet needs pyarrow, which is not installed; `pip install pyarrow` (or "
                "`pip install 'selfsup[parquet]'`), or write .npy. Nothing was computed."
            ) from None
    parent = out.parent
    if not parent.exists():
        raise SelfsupError(f"--out {out}: the folder {parent} does not exist; create it first (mkdir -p {parent}) "
                           "or choose another --out. Nothing was computed.")
    if not parent.is_dir():
        raise SelfsupError(f"--out {out}: {parent} is not a folder; choose another --out. Nothing was computed.")
    if out.is_dir():
        raise SelfsupError(f"--out {out} is a folder; name a file ending in .npy or .parquet. Nothing was computed.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SelfsupError(f"--out {out}: the folder {parent} cannot be written (permission denied); choose "
                           "another --out. Nothing was computed.")
    return suffix


def sidecars(out: Path) -> tuple[Path, Path]:
    """``<stem>.names.txt`` and ``<stem>.labels.npy`` beside ``out``."""
    return out.with_name(out.stem + ".names.txt"), out.with_name(out.stem + ".labels.npy")


# --------------------------------------------------------------------------- data
def _is_pattern(data: str) -> bool:
    return any(c in data for c in PATTERN_CHARS)


def _node(registry: Any, name: str, params: dict[str, Any], data: str) -> dict[str, Any]:
    """``{name, params...}`` keeping the parameters the registered factory takes."""
    from .config import parameters_of

    if ("dataset", name) not in registry:
        raise ConfigError(f"DATA {data}: reading it needs the dataset {name!r}, which is not registered here "
                          f"(registered datasets: {', '.join(registry.names('dataset'))}).")
    accepted, _ = parameters_of(registry.get("dataset", name).factory)
    return {"name": name, **{k: v for k, v in params.items() if k in accepted}}


def _npz_node(registry: Any, data: str, split: str) -> dict[str, Any]:
    x, y = ("x_train", "y_train") if split == "train" else ("x_test", "y_test")
    try:
        with np.load(data, allow_pickle=False) as npz:
            files = set(npz.files)
    except Exception:
        files = None  # let the dataset factory name what is wrong with the file
    if files is not None and x not in files:
        other = "--split train to embed x_train" if split == "test" else "--split test to embed x_test"
        raise DataError(f"DATA {data}: the file has no {x!r} array (it holds {', '.join(sorted(files)) or 'none'}); "
                        f"use {other}.")
    return _node(registry, "arrays", {"path": data, "images_key": x, "labels_key": y, "test_images_key": x,
                                      "test_labels_key": y}, data)


def data_node(registry: Any, data: str, split: str | None, spec: Any) -> tuple[dict[str, Any], str]:
    """The dataset node that reads DATA (not ``run``) and the split to embed."""
    size = {"image_size": spec.image_size, "channels": spec.channels} if spec is not None else {}
    path = Path(data).expanduser()
    if path.suffix.lower() == ".npz":
        split = split or "test"
        return _npz_node(registry, data, split), split
    if path.is_dir():
        kind, node = "a folder", _node(registry, "image_folder", {"root": data, **size, "test_fraction": 0.0}, data)
    elif path.suffix.lower() == ".npy":
        kind, node = "an .npy array", _node(registry, "npy_images", {"path": data, "test_fraction": 0.0}, data)
    elif path.suffix.lower() == ".tar" or _is_pattern(data):
        kind, node = "tar shards", _node(registry, "image_shards", {"urls": data, **size, "test_fraction": 0.0}, data)
    elif not path.exists():
        raise DataError(f"DATA {data}: no such file or folder; give `run`, a folder of images, an .npz or .npy "
                        "file, or .tar shards.")
    else:
        raise DataError(f"DATA {data}: not data selfsup embed reads; give `run` (the run's own dataset), a folder "
                        "of images, an .npz or .npy file, or .tar shards (a file or a pattern).")
    if split == "test":
        raise ConfigError(f"--split test: {kind} ({data}) is embedded whole, it has no test split; drop --split.")
    return node, "train"


def open_split(registry: Any, run_dir: Path, data: str, split: str | None, spec: Any) -> tuple[Any, str]:
    """The split of DATA to embed and its description."""
    from .config import build

    if data == "run":
        from .engine import load_run_config, settings_from_config

        node, split = settings_from_config(load_run_config(run_dir)).data.dataset, split or "test"
        where = f"the run's dataset ({node.get('name', '?')}, split {split})"
    else:
        node, split = data_node(registry, data, split, spec)
        where = f"{data}" + (f" (split {split})" if Path(data).suffix.lower() == ".npz" else "")
    splits = build(registry, "dataset", node, "data.dataset" if data == "run" else "DATA")
    chosen = getattr(splits, split, None)
    if chosen is None:
        raise DataError(f"DATA {data}: the data has no {split} split; choose --split "
                        f"{'train' if split == 'test' else 'test'}.")
    if isinstance(chosen, StreamedImages):  # files: decoded by worker processes as they stream
        from .engine.data_setup import resolve_workers

        chosen = dataclasses.replace(chosen, workers=resolve_workers(None))
    return chosen, where


def _image_shape(split: Any) -> tuple[int, ...] | None:
    shape = getattr(split, "image_shape", None)
    if shape is not None:
        return tuple(int(d) for d in shape)
    inputs = getattr(split, "inputs", None)
    if hasattr(inputs, "dim") and inputs.dim() == 4:
        return tuple(int(d) for d in inputs.shape[1:])
    return None


# --------------------------------------------------------------------------- writing
def _write_all(out: Path, fmt: str, features: np.ndarray, names: list[str], labels: np.ndarray | None) -> None:
    """Write every output to ``<file>.tmp``, then rename them all; on failure remove the
    temporary files and leave the outputs as they were."""
    names_path, labels_path = sidecars(out)
    jobs: list[tuple[Path, Any]] = []

    def write_out(tmp: Path) -> None:
        if fmt == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, features)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {"name": pa.array(names, pa.string())}
        if labels is not None:
            columns["label"] = pa.array(labels, pa.int64())
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), features.shape[1])
        pq.write_table(pa.table(columns), tmp)

    def write_labels(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, labels)

    jobs.append((out, write_out))
    jobs.append((names_path, lambda tmp: tmp.write_text("".join(n + "\n" for n in names))))
    if labels is not None:
        jobs.append((labels_path, write_labels))
    temps = [path.with_name(path.name + ".tmp") for path, _ in jobs]
    try:
        for (_, write), tmp in zip(jobs, temps):
            write(tmp)
        for (path, _), tmp in zip(jobs, temps):
            os.replace(tmp, path)
    except OSError as exc:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise SelfsupError(f"could not write {out}: {exc.strerror or exc}. Nothing was replaced; free disk space "
                           "or check the folder's permissions.") from None
    if labels is None and labels_path.exists():
        labels_path.unlink()  # a previous run's labels would not match these rows


# --------------------------------------------------------------------------- the command
def embed(run_dir: str | Path, data: str, out: str | Path, layer: str | None = None, split: str | None = None,
          batch_size: int = 256, device: str = "auto", progress: bool = True) -> EmbedResult:
    """Embed DATA with the encoder of ``run_dir`` and write ``out`` and its sidecars (see the
    module docstring). Every check on ``out`` and the arguments runs before any embedding."""
    import torch
    from tqdm import tqdm

    from .engine.device import select_device
    from .evaluation import extract_features
    from .export import embedding_function, load_encoder
    from .plugin_manager import default_registry

    out = Path(out).expanduser()
    fmt = check_out(out)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size: must be a positive integer, got {batch_size!r}.")
    if split not in (None, "train", "test"):
        raise ConfigError(f"--split: train or test, got {split!r}.")
    try:
        dev = select_device(device)
    except ConfigError as exc:
        message = str(exc).replace("trainer.device=", "--device ").replace("trainer.device", "--device")
        raise ConfigError(message) from None
    registry = default_registry()
    run_dir = Path(run_dir)
    encoder = load_encoder(run_dir, device=dev, registry=registry)
    embed_fn = embedding_function(encoder, layer)
    spec = encoder.input_spec
    chosen, where = open_split(registry, run_dir, data, split, spec)
    n = len(chosen)
    if n == 0:
        raise DataError(f"DATA {data}: {where} holds no images; nothing to embed.")
    shape = _image_shape(chosen)
    if spec is not None and shape is None and isinstance(getattr(chosen, "inputs", None), dict):
        raise DataError(f"DATA {data}: multimodal data, but the encoder of {run_dir} reads images "
                        f"{'x'.join(map(str, spec.shape))}.")
    if spec is not None and shape is not None:
        spec.check(shape, f"DATA {data}")

    bar = tqdm(total=n, desc="embed", unit="img", dynamic_ncols=True, disable=not progress, file=sys.stderr)

    def counted(x: Any) -> Any:
        z = embed_fn(x)
        bar.update(int(z.shape[0]))
        return z

    try:
        features = extract_features(counted, chosen.inputs, batch_size, dev)
    except (RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"DATA {data}: the encoder of {run_dir} could not embed {where} "
                        f"(images {shape or 'of unknown shape'}): {first}") from None
    finally:
        bar.close()
    array = features.to(torch.float32).numpy()
    if array.shape[0] != n:
        raise DataError(f"DATA {data}: {n} samples, but {array.shape[0]} embeddings came back.")
    names = getattr(chosen, "names", None)
    names = [str(name) for name in names] if names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise DataError(f"DATA {data}: {len(names)} names for {n} samples.")
    labels = getattr(chosen, "labels", None)
    if labels is not None:
        labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels, dtype=np.int64)
    if labels is not None and (labels.shape != (n,) or bool((labels < 0).all())):
        labels = None
    _write_all(out, fmt, array, names, labels)
    names_path, labels_path = sidecars(out)
    return EmbedResult(out, int(array.shape[0]), int(array.shape[1]), names_path,
                       labels_path if labels is not None else None)


def _cmd_embed(args: argparse.Namespace) -> int:
    result = embed(args.run_dir, args.data, args.out, layer=args.layer, split=args.split, batch_size=args.batch_size,
                   device=args.device, progress=not args.no_progress)
    extra = f", labels in {result.labels}" if result.labels is not None else ""
    print(f"wrote {result.rows} x {result.dim} float32 embeddings to {result.out} (names in {result.names}{extra})")
    return 0


def add_parser(sub: Any) -> None:
    """``selfsup embed`` on the CLI's sub-command parser."""
    p = sub.add_parser(
        "embed", help="embed data with a finished run's encoder",
        description="Embed DATA with the encoder of RUN_DIR: float32 [N, D] rows in --out (.npy, or .parquet with "
                    "pyarrow), the rows' file names (or indices) in <stem>.names.txt and labels, when known, in "
                    "<stem>.labels.npy.",
        epilog="DATA: `run` (the run's own dataset), FILE.npz (x_test/y_test; --split train: x_train/y_train), "
               "FILE.npy (uint8 images), a FOLDER of images, or tar shards (x.tar, 'shard-{000..009}.tar'). "
               "Example: selfsup embed runs/moco_digits run --out digits.npy",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's folder")
    p.add_argument("data", metavar="DATA", help="run | FILE.npz | FILE.npy | FOLDER | SHARDS.tar | 'PATTERN'")
    p.add_argument("--out", required=True, help="output file: .npy or .parquet")
    p.add_argument("--layer", help="the representation: global, or a layer the encoder offers (e.g. DIM's fc); "
                   "default: the one the run's evaluation used")
    p.add_argument("--split", choices=("train", "test"),
                   help="which split of `run` or of an .npz (default test); folders, .npy and shards are "
                        "embedded whole")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch (default 256)")
    p.add_argument("--device", default="auto", help="auto (default: a GPU when there is one), cpu, cuda, cuda:N, mps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_embed)
