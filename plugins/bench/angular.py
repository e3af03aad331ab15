"""``selfsup bench angular``: angular-margin objectives vs softmax vs pairwise contrastive on multi-view data.

Every method trains the same encoder (the pipeline's, by default the two-level transformer
on the four views of digits) with the same optimiser, schedule, batch size and epochs.
After each epoch the test split is embedded and scored (nearest prototype and kNN); the
training time of each epoch is measured apart from evaluation. At the end the table reports
accuracy, accuracy with one modality removed at test time, class angles and time per epoch,
and time per epoch when training on 2, 3 and 4 modalities.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from selfsup.config import build, load_pipeline, to_container
from selfsup.data import DataSplits, MultiModalArrays
from selfsup.engine import Trainer, settings_from_config
from selfsup.evaluation import extract_features, knn_accuracy
from selfsup.interfaces import Objective

from ..angular.classifier import SphericalClassifier
from ..angular.metrics import class_angles, class_means, nearest_prototype_accuracy

#: The pipeline the benchmark trains when no --config is given (examples/angular_multimodal.yaml holds the same).
DEFAULT_PIPELINE: dict[str, Any] = {
    "seed": 0,
    "data": {"dataset": {"name": "multiview_digits"}, "augment": None, "batch_size": 128},
    "objective": {
        "name": "arcface",
        "encoder": {"name": "two_level_transformer", "dim": 64, "depth": 1, "fusion_depth": 1, "heads": 4,
                    "modality_dropout": 0.2},
        "preset": "small_data",
    },
    "optim": {"name": "adamw", "lr": 0.002, "weight_decay": 0.05},
    "schedule": {"name": "cosine", "warmup_epochs": 1},
    "trainer": {"epochs": 15, "precision": "fp32", "out_dir": "runs", "run_name": "angular_multimodal"},
    "eval": {"knn_k": 20, "knn_temperature": 0.1, "linear_probe": False},
}

#: Objective settings of each method; the encoder node comes from the pipeline.
METHODS: dict[str, dict[str, Any]] = {
    "arcface": {"name": "arcface", "preset": "small_data"},
    "cosface": {"name": "cosface", "preset": "small_data"},
    "softmax_ce": {"name": "softmax_ce", "preset": "small_data"},
    "sphereface": {"name": "sphereface", "preset": "small_data", "gamma": 0.5},
    "pairwise_contrastive": {"name": "pairwise_contrastive"},
}
DEFAULT_METHODS = ("arcface", "cosface", "softmax_ce", "pairwise_contrastive")


@dataclass
class MethodResult:
    name: str
    curve: list[tuple[float, float, float]] = field(default_factory=list)  # (train seconds, proto acc, kNN acc)
    epoch_seconds: list[float] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    seconds_by_modalities: dict[int, float] = field(default_factory=dict)
    dropped: dict[str, float] = field(default_factory=dict)  # modality removed at test time -> proto acc


def subset(data: DataSplits, names: list[str]) -> DataSplits:
    """The same samples with only the modalities ``names``."""
    pick = lambda split: MultiModalArrays({m: split.modalities[m] for m in names}, split.labels)  # noqa: E731
    return DataSplits(pick(data.train), pick(data.test), data.class_names, data.source)


def build_objective(registry, encoder_node: dict, method: str, data: DataSplits, seed: int) -> Objective:
    node = {**copy.deepcopy(METHODS[method]), "encoder": copy.deepcopy(encoder_node)}
    torch.manual_seed(seed)
    return build(registry, "objective", node, "objective", context=data.context())


def train_epochs(objective: Objective, data: DataSplits, settings, epochs: int, on_epoch=None) -> list[float]:
    """Train ``epochs`` epochs through the engine's public step (its loader, optimiser, schedule
    and NaN check); returns each epoch's training seconds. Nothing is written to disk."""
    settings = dataclasses.replace(settings, trainer=dataclasses.replace(
        settings.trainer, epochs=epochs, max_steps=None, max_minutes=None, device="cpu", compile=False))
    with tempfile.TemporaryDirectory(prefix="selfsup-bench-angular-") as run_dir:
        trainer = Trainer(objective, data, None, settings, Path(run_dir), loggers=[])
        seconds = []
        for epoch in range(epochs):
            objective.train()
            tick = time.perf_counter()
            for inputs, labels, index in trainer.loader.epoch(epoch):
                trainer.train_step(inputs, labels, index)
            seconds.append(time.perf_counter() - tick)
            if on_epoch is not None:
                on_epoch(epoch, seconds[-1])
    return seconds


@torch.no_grad()
def score(objective: Objective, data: DataSplits, knn_k: int, knn_temperature: float,
          drop: str | None = None, reference: dict | None = None) -> dict[str, Any]:
    """Nearest-prototype and kNN accuracy on the test split, optionally without modality ``drop``.

    Prototypes are the learned ones for a spherical classifier, the normalised class means
    of the training embeddings otherwise. With ``drop`` the test samples lose that modality
    while the kNN memory and the prototypes stay those of the full-modality training data
    (``reference``, from a call without ``drop``).
    """
    objective.eval()
    test_inputs = {m: x for m, x in data.test.modalities.items() if m != drop}
    test = extract_features(objective.embed, test_inputs, 512)
    if reference is None:
        train = extract_features(objective.embed, data.train.modalities, 512)
        prototypes = (objective.normalized_prototypes() if isinstance(objective, SphericalClassifier)
                      else class_means(train, data.train.labels, data.num_classes))
        reference = {"train": train, "prototypes": prototypes}
    return {
        "proto_acc": nearest_prototype_accuracy(test, data.test.labels, reference["prototypes"]),
        "knn_acc": knn_accuracy(reference["train"], data.train.labels, test, data.test.labels, k=knn_k,
                                temperature=knn_temperature, num_classes=data.num_classes),
        "test_features": test,
        "reference": reference,
    }


def run_method(registry, encoder_node: dict, method: str, data: DataSplits, settings) -> MethodResult:
    result = MethodResult(method)
    objective = build_objective(registry, encoder_node, method, data, settings.seed)
    knn = (settings.eval.knn_k, settings.eval.knn_temperature)
    elapsed = [0.0]

    def on_epoch(epoch: int, seconds: float) -> None:
        elapsed[0] += seconds
        s = score(objective, data, *knn)
        result.curve.append((elapsed[0], s["proto_acc"], s["knn_acc"]))
        print(f"  {method:<21} epoch {epoch + 1:>3}: {seconds:6.2f} s, proto acc {100 * s['proto_acc']:.2f}%, "
              f"kNN acc {100 * s['knn_acc']:.2f}%", flush=True)

    result.epoch_seconds = train_epochs(objective, data, settings, settings.trainer.epochs, on_epoch)
    full = score(objective, data, *knn)
    angles = class_angles(full["test_features"], data.test.labels)
    dropped = [score(objective, data, *knn, drop=m, reference=full["reference"]) for m in data.modality_shapes]
    result.dropped = {m: d["proto_acc"] for m, d in zip(data.modality_shapes, dropped)}
    result.final = {
        "proto_acc": full["proto_acc"], "knn_acc": full["knn_acc"],
        "drop_one_proto_mean": sum(d["proto_acc"] for d in dropped) / len(dropped),
        "drop_one_proto_worst": min(d["proto_acc"] for d in dropped),
        "drop_one_knn_mean": sum(d["knn_acc"] for d in dropped) / len(dropped),
        **angles,
        "seconds_per_epoch": sum(result.epoch_seconds) / len(result.epoch_seconds),
    }
    return result


def time_by_modalities(registry, encoder_node: dict, method: str, data: DataSplits, settings, epochs: int) -> dict:
    names = list(data.modality_shapes)
    out = {}
    for m in range(2, len(names) + 1):
        part = subset(data, names[:m])
        objective = build_objective(registry, encoder_node, method, part, settings.seed)
        out[m] = sum(train_epochs(objective, part, settings, epochs)) / epochs
    return out


def main(argv: list[str]) -> int:
    """Angular margins (ArcFace, CosFace) vs softmax CE vs pairwise contrastive on multi-view digits."""
    parser = argparse.ArgumentParser(prog="selfsup bench angular", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="pipeline YAML (default: the built-in copy of examples/angular_multimodal.yaml)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated, from {', '.join(METHODS)} (default: %(default)s)")
    parser.add_argument("--epochs", type=int, help="override trainer.epochs")
    parser.add_argument("--timing-epochs", type=int, default=1, help="epochs per run of the 2->M modality timing (0: skip)")
    parser.add_argument("--seed", type=int, help="override the pipeline's seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared CPUs)")
    parser.add_argument("--out-dir", default="runs/bench_angular", help="where the CSV and PNG go")
    args = parser.parse_args(argv)

    from selfsup.plugin_manager import default_registry

    from .angular_report import print_table, save_csv, save_curves

    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    cfg = load_pipeline(args.config) if args.config else DEFAULT_PIPELINE
    node = to_container(cfg)
    settings = settings_from_config(cfg)
    if args.epochs is not None:
        settings.trainer.epochs = args.epochs
    if args.seed is not None:
        settings.seed = args.seed
    registry = default_registry()
    data = build(registry, "dataset", settings.data.dataset, "data.dataset")
    if not data.is_multimodal:
        parser.error("the pipeline's dataset must be multimodal (e.g. multiview_digits)")
    encoder_node = node["objective"]["encoder"]
    print(f"data: {data.source}; {len(data.train)} train / {len(data.test)} test; modalities "
          + ", ".join(f"{m} {t}x{f}" for m, (t, f) in data.modality_shapes.items()))
    print(f"encoder: {encoder_node}; {settings.trainer.epochs} epochs, batch {settings.data.batch_size}, "
          f"{settings.optim.name} lr {settings.optim.lr:g}, seed {settings.seed}, {args.threads} thread(s)")
    results = []
    for method in methods:
        results.append(run_method(registry, encoder_node, method, data, settings))
        if args.timing_epochs > 0:
            results[-1].seconds_by_modalities = time_by_modalities(
                registry, encoder_node, method, data, settings, args.timing_epochs)
    out_dir = Path(args.out_dir)
    print_table(results, list(data.modality_shapes))
    save_csv(results, out_dir / "angular_bench.csv")
    save_curves(results, out_dir / "accuracy_vs_time.png")
    print(f"wrote {out_dir / 'angular_bench.csv'} and {out_dir / 'accuracy_vs_time.png'}")
    return 0
