"""From a pipeline config to a ready :class:`~selfsup.engine.trainer.Trainer`."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from ..config import SECTIONS, build, to_container
from ..errors import ConfigError
from ..plugin_manager import default_registry
from ..registry import Registry
from .data_setup import check_eval_data, prepare_data
from .monitor import build_diagnostics
from .run_log import build_loggers
from .settings import Settings, settings_from_config
from .run_folder import CONFIG_NAME
from .trainer import Trainer


def resolved_config(cfg: Any, settings: Settings) -> dict[str, Any]:
    """The pipeline with every section's defaults filled in (what ``config.yaml`` holds)."""
    node = to_container(cfg)
    out: dict[str, Any] = {"seed": settings.seed, "objective": node["objective"]}
    for name in SECTIONS:
        value = dataclasses.asdict(getattr(settings, name))
        out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
    return out


def default_run_dir(settings: Settings, objective_name: str) -> Path:
    name = settings.trainer.run_name or f"{objective_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(settings.trainer.out_dir) / name


def build_trainer(cfg: Any, registry: Registry | None = None, run_dir: Path | None = None) -> Trainer:
    """Validate ``cfg`` and build data, augmentation and objective; nothing trains yet."""
    registry = registry or default_registry()
    settings = settings_from_config(cfg)
    node = to_container(cfg)
    data = prepare_data(build(registry, "dataset", settings.data.dataset, "data.dataset"), settings.data)
    eval_data = build_eval_data(registry, settings, data)
    if data.is_multimodal and settings.data.augment:
        raise ConfigError(
            f"data.augment: image augmentation cannot run on multimodal data (modalities "
            f"{', '.join(data.modality_shapes)}); set data.augment: null."
        )
    transform = build(registry, "transform", settings.data.augment, "data.augment") if settings.data.augment else None
    torch.manual_seed(settings.seed)
    check_data_parameters(node["objective"], data.context(), "objective")
    objective = build(registry, "objective", node["objective"], "objective", context=data.context())
    dry_run(objective, data)
    check_views(objective, transform, data)
    if objective.needs_labels and bool((data.train.labels < 0).any()):
        raise ConfigError(
            f"objective: {type(objective).__name__} is supervised and needs a label for every training "
            f"sample, but {int((data.train.labels < 0).sum())} of {len(data.train)} are unknown (-1)."
        )
    objective_name = node["objective"] if isinstance(node["objective"], str) else node["objective"]["name"]
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(settings, objective_name)
    # diagnostics and loggers are looked up by name: the core imports no plugin
    diagnostics = build_diagnostics(registry, settings.monitor)
    loggers = build_loggers(registry, settings.trainer.loggers)
    return Trainer(objective, data, transform, settings, run_dir, config=resolved_config(cfg, settings),
                   diagnostics=diagnostics, loggers=loggers, eval_data=eval_data)


def build_eval_data(registry: Registry, settings: Settings, data: Any) -> Any:
    """The labelled splits kNN evaluation reads: ``eval.data``, else the training data's own
    when its held-out split has labels, else None (evaluation is skipped)."""
    if settings.eval.data is None:
        return data if data.has_labels else None
    eval_data = prepare_data(build(registry, "dataset", settings.eval.data, "eval.data"), settings.data)
    check_eval_data(eval_data, data)
    return eval_data


#: Parameters that describe the data: a pipeline that sets one must agree with the dataset.
DATA_PARAMETERS = ("in_channels", "image_size", "num_classes")


def check_data_parameters(node: Any, context: dict[str, Any], path: str) -> None:
    """Refuse a data-describing parameter (``in_channels``, ``image_size``, ``num_classes``)
    set anywhere in the objective's node to a value the dataset contradicts, naming the key."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            if key in DATA_PARAMETERS and key in context and value != context[key]:
                raise ConfigError(
                    f"{where}: {value!r}, but the data has {key} {context[key]!r}; remove the key (it is filled "
                    "from the data) or use data that fits it."
                )
            check_data_parameters(value, context, where)


@torch.no_grad()
def dry_run(objective: Any, data: Any) -> None:
    """Embed two training samples before training, so a model that cannot read this data
    fails here with the data's shape named, not inside the first step."""
    sample = data.train.select(torch.arange(min(2, len(data.train))))
    inputs = sample.as_float(torch.device("cpu"))
    was_training = objective.training
    objective.eval()
    try:
        objective.embed(inputs)
    except (RuntimeError, ValueError) as exc:
        shape = ({m: tuple(x.shape) for m, x in inputs.items()} if isinstance(inputs, dict)
                 else tuple(inputs.shape))
        raise ConfigError(
            f"objective: the model cannot read this data ({shape}, from data.dataset): "
            f"{str(exc).splitlines()[0]}. Check the encoder's settings against the data."
        ) from None
    finally:
        objective.train(was_training)


def check_views(objective: Any, transform: Any, data: Any) -> None:
    """Refuse, before training, views the objective cannot use, naming the key.

    An objective with a ``global_views`` attribute below its ``num_views`` (DINO; SimCLR,
    BYOL and SimSiam with ``local_views``) reads its first ``global_views`` views as crops at
    the image size and the rest as local crops; a multi-crop transform (one with a
    ``global_crops`` attribute) makes its first ``global_crops`` views global and the rest
    local. The two counts must agree, and the model must read a view of every size the
    transform makes (two training samples go through the transform and ``embed``).
    """
    num_views = int(getattr(objective, "num_views", 0))
    if transform is None or num_views <= 0:
        return
    name = type(objective).__name__
    global_views = getattr(objective, "global_views", None)
    global_crops = getattr(transform, "global_crops", None)
    if global_views is not None and global_views < num_views and global_crops is None:
        raise ConfigError(
            f"data.augment: {type(transform).__name__} makes every view at the image size, but objective.local_views "
            f"asks {name} for {num_views - global_views} local crops after its {global_views} global views; use "
            f"data.augment: {{name: multi_crop, global_crops: {global_views}}}, or objective.local_views: 0."
        )
    if global_crops is not None and global_views is not None and global_crops != global_views:
        raise ConfigError(
            f"data.augment.global_crops: {global_crops}, but objective.global_views is {global_views} ({name} reads "
            f"its first {global_views} views as the global crops); set data.augment: {{name: multi_crop, "
            f"global_crops: {global_views}}} (or objective.global_views: {global_crops})."
        )
    if global_crops is not None and global_crops > num_views:
        raise ConfigError(
            f"data.augment.global_crops: {global_crops}, but {name} takes {num_views} views in all; set "
            f"data.augment.global_crops to at most {num_views}."
        )
    _embed_every_view_size(objective, transform, data, num_views)


@torch.no_grad()
def _embed_every_view_size(objective: Any, transform: Any, data: Any, num_views: int) -> None:
    """Make the views of two training samples (the global RNG untouched) and ``embed`` one
    of every size other than the image's, so that a model that cannot read a local crop
    fails here with the crop's shape named."""
    images = data.train.select(torch.arange(min(2, len(data.train)))).as_float(torch.device("cpu"))
    if not isinstance(images, torch.Tensor):
        return  # multimodal data: no image views
    with torch.random.fork_rng(devices=[]):
        views = transform(images, num_views, torch.Generator().manual_seed(0))
    seen = {tuple(images.shape)}
    was_training = objective.training
    objective.eval()
    try:
        for position, view in enumerate(views):
            if tuple(view.shape) in seen:
                continue
            seen.add(tuple(view.shape))
            try:
                objective.embed(view)
            except (RuntimeError, ValueError, AssertionError) as exc:
                raise ConfigError(
                    f"data.augment: the model cannot read view {position + 1} of {num_views} "
                    f"({tuple(view.shape)}, images of {tuple(images.shape)}): {str(exc).splitlines()[0]}. "
                    "Use a larger data.augment.local_size, or an encoder that takes any image size."
                ) from None
    finally:
        objective.train(was_training)


#: What ``--resume`` may change (key paths and the sections under them): the optimiser's
#: hyperparameters, the schedule, the run's length, logging, device and precision, evaluation
#: and monitoring. Everything else (objective, data, seed, the optimiser's kind) shapes what
#: the checkpoint holds, and is refused.
RESUMABLE_KEYS = (
    "optim.lr", "optim.momentum", "optim.weight_decay", "optim.betas", "schedule",
    "trainer.epochs", "trainer.max_steps", "trainer.max_minutes", "trainer.log_every", "trainer.checkpoint_every_epochs",
    "trainer.progress", "trainer.grad_clip", "trainer.loggers", "trainer.eval_after", "trainer.device",
    "trainer.precision", "trainer.retain_host_memory", "eval", "monitor",
)


def check_resume_overrides(overrides: list[str]) -> None:
    """Refuse ``--resume`` overrides that cannot take effect on a checkpointed run, naming them."""
    keys = [item.split("=", 1)[0].strip() for item in overrides]
    refused = [k for k in keys if not any(k == r or k.startswith(r + ".") for r in RESUMABLE_KEYS)]
    if refused:
        raise ConfigError(
            f"--resume cannot change {', '.join(refused)}: the checkpoint was trained with the run's own "
            "values (model, data, seed or optimiser kind). Start a fresh run with another --run-dir to change "
            f"them. A resumed run can change: {', '.join(RESUMABLE_KEYS)}."
        )


def load_run_config(run_dir: Path):
    """The resolved pipeline saved in a run folder."""
    from ..config import load_pipeline

    return load_pipeline(Path(run_dir) / CONFIG_NAME)
