"""The run folder policy: a fresh run never mixes with another run's files.

A fresh run refuses a folder that already holds a run (continue it with ``--resume``, write
elsewhere with ``--run-dir``, or replace it with ``--overwrite``, which deletes exactly the
files a run writes and nothing else in the folder).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import SelfsupError
from . import checkpoint as ckpt

CONFIG_NAME = "config.yaml"
EVAL_BEFORE_NAME = "eval_before.json"
METRICS_JSON = "metrics.json"
KNN_CURVE_NAME = "knn_curve.png"
#: What a run writes into its folder (files and folders; the built-in loggers' too).
RUN_FILES = (CONFIG_NAME, ckpt.CHECKPOINT_NAME, ckpt.CHECKPOINT_NAME + ".tmp", ckpt.ENCODER_NAME,
             ckpt.ENCODER_MANIFEST_NAME, ckpt.BACKBONE_NAME, EVAL_BEFORE_NAME,
             METRICS_JSON, KNN_CURVE_NAME, "metrics.csv", "metrics.jsonl", "loss.png", "embedding_tsne.png",
             "tensorboard")


def checkpoint_mismatch(error: RuntimeError, most: int = 4) -> str:
    """The first lines of ``load_state_dict``'s complaint (missing / unexpected keys, shape
    mismatches), as one sentence."""
    lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
    shown = "; ".join(lines[:most]) + (f"; and {len(lines) - most} more" if len(lines) > most else "")
    return shown or str(error)


def claim_run_dir(run_dir: Path, overwrite: bool, main: bool = True) -> None:
    """Make ``run_dir`` ready for a fresh run: refuse one that holds a run, or with
    ``overwrite`` delete that run's files (nothing else in the folder is touched). Every
    process checks, so all refuse together; only the ``main`` one creates and deletes."""
    if main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SelfsupError(f"cannot create the run folder {run_dir}: {exc.strerror or exc}.") from None
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not existing:
        return
    if not overwrite:
        raise SelfsupError(
            f"{run_dir} already holds a run ({', '.join(existing)}); nothing was changed. Continue it with "
            f"`selfsup train --resume {run_dir}`, write this run elsewhere with --run-dir, or replace it "
            "with --overwrite."
        )
    for name in existing if main else ():
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


