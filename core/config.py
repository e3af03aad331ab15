"""Pipeline files: loading, overrides, validation against signatures, building components.

A pipeline names registry entries only, never import paths. Every component's parameters
are checked against its factory's signature (or a config dataclass) before anything is
built, and every mistake is reported with its full key path::

    objective.critic.temperture: unknown parameter of critic 'dot'. Did you mean
    'temperature'? Allowed: temperature.

Parameters that describe the data (``in_channels``, ``image_size``, ``num_classes``,
``num_train``; ``modality_shapes`` for multimodal data) are filled from a *context* when a
factory asks for them and the pipeline does not set them.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError, RegistryError, did_you_mean
from .kinds import PART_KINDS
from .registry import Registry

# --------------------------------------------------------------------------- sections
Node = dict[str, Any]


def bounded(default: Any, *, minimum: float | None = None, above: float | None = None,
            maximum: float | None = None) -> Any:
    """A section field whose value (unless null) must be >= ``minimum``, > ``above`` and
    <= ``maximum``; :func:`section` checks it and names the key path when it is not."""
    metadata = {"minimum": minimum, "above": above, "maximum": maximum}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_bounds(obj: Any, path: str) -> None:
    """Raise a :class:`ConfigError` for the first field of dataclass ``obj`` out of its bounds."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None or not f.metadata or isinstance(value, bool):
            continue
        low, above, high = f.metadata.get("minimum"), f.metadata.get("above"), f.metadata.get("maximum")
        if (low is not None and value < low) or (above is not None and value <= above) or (
                high is not None and value > high):
            wanted = " and ".join(w for w in (
                f">= {low:g}" if low is not None else "", f"> {above:g}" if above is not None else "",
                f"<= {high:g}" if high is not None else "") if w)
            raise ConfigError(f"{path}.{f.name}: must be {wanted}, got {value!r}.")


@dataclasses.dataclass
class DataConfig:
    """``data:`` — what to train on and how views are made."""

    dataset: Node = dataclasses.field(default_factory=lambda: {"name": "digits"})
    augment: Node | None = dataclasses.field(default_factory=lambda: {"name": "two_view"})
    batch_size: int = bounded(256, minimum=1)
    drop_last: bool = True
    #: ``memory``: decode the data once and keep it on the training device (batch-wise, no
    #: per-sample work); ``stream``: DataLoader workers read and decode every batch from the
    #: files (data larger than memory); ``auto``: memory when the decoded splits fit
    #: ``memory_budget_gb``, else stream. Data that is already arrays (digits, .npz) is in memory.
    loader: Literal["auto", "memory", "stream"] = "auto"
    #: Decoded size (GB) up to which ``loader: auto`` keeps the data in memory; null: a
    #: quarter of the machine's memory.
    memory_budget_gb: float | None = bounded(None, above=0)
    #: Worker processes that read and decode files (streaming, and decoding into memory);
    #: null: one per CPU core but one, at most 8; 0: in the training process.
    workers: int | None = bounded(None, minimum=0)
    #: An image file that cannot be decoded: ``fail`` names it and stops; ``skip`` leaves it
    #: out (counted, the first few named in the log).
    on_bad_image: Literal["skip", "fail"] = "fail"
    #: Where decoded folders and shards are cached as .npy (keyed by the files' names, sizes
    #: and mtimes); ``auto``: $SELFSUP_CACHE or ~/.cache/selfsup; null: no cache.
    cache_dir: str | None = "auto"


@dataclasses.dataclass
class OptimConfig:
    """``optim:`` — the optimiser of the objective's parameters."""

    name: Literal["sgd", "adamw", "lars"] = "sgd"
    lr: float = bounded(0.06, above=0)
    momentum: float = bounded(0.9, minimum=0, maximum=1)
    weight_decay: float = bounded(5e-4, minimum=0)
    betas: tuple[float, float] = (0.9, 0.999)
    #: Multiply ``lr`` by batch_size / 256 (the linear scaling rule).
    scale_by_batch: bool = False


@dataclasses.dataclass
class ScheduleConfig:
    """``schedule:`` — learning-rate schedule over optimiser steps."""

    name: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = bounded(0.0, minimum=0)
    min_lr_ratio: float = bounded(0.0, minimum=0, maximum=1)


@dataclasses.dataclass
class TrainerConfig:
    """``trainer:`` — the loop."""

    #: Passes over the training split (null: no epoch limit; then set max_steps or max_minutes).
    epochs: int | None = bounded(10, minimum=1)
    #: Stop after this many optimiser steps in total (None: run all epochs).
    max_steps: int | None = bounded(None, minimum=1)
    #: Wall-clock budget of training in minutes (evaluation and checkpoints not counted).
    #: The learning-rate and momentum schedules are sized to the steps that fit in it, from
    #: the pace measured after 10 steps and again at every 10% of the budget.
    max_minutes: float | None = bounded(None, above=0)
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    #: Keep 4-D weights and image batches in channels-last memory order (faster convolutions
    #: on GPUs with tensor cores and with oneDNN on recent CPUs).
    channels_last: bool = False
    #: ``torch.compile`` every encoder of the objective in place (state-dict keys unchanged).
    compile: bool = False
    #: On a CPU device under Linux/glibc, keep freed tensor memory in the process for the next
    #: step instead of unmapping it (no page faults per step; resident memory stays at its peak).
    retain_host_memory: bool = True
    grad_clip: float | None = bounded(None, above=0)
    log_every: int = bounded(10, minimum=1)
    checkpoint_every_epochs: int = bounded(1, minimum=1)
    #: Metrics sinks (registry kind ``logger``): names or ``{name: ..., params}``.
    loggers: list[Union[str, Node]] = dataclasses.field(default_factory=lambda: ["csv", "jsonl", "tensorboard"])
    out_dir: str = "runs"
    run_name: str | None = None
    progress: bool = True
    #: Evaluate the encoder at random initialisation before training (the baseline).
    eval_before: bool = True
    eval_after: bool = True


@dataclasses.dataclass
class EvalConfig:
    """``eval:`` — frozen-feature evaluation on the held-out split."""

    knn_k: int = bounded(200, minimum=1)
    knn_temperature: float = bounded(0.1, above=0)
    linear_probe: bool = True
    plots: bool = True
    tsne_points: int = bounded(2000, minimum=0)
    batch_size: int = bounded(512, minimum=1)
    #: kNN on the held-out split (and the monitor's diagnostics) during training, every this
    #: many epochs and/or training minutes; rows in the metrics, ``knn_curve.png`` at the end.
    every_epochs: int | None = bounded(None, minimum=1)
    every_minutes: float | None = bounded(None, above=0)
    #: A labelled dataset to evaluate on instead of the training data's own splits (a
    #: ``data.dataset``-style entry, e.g. ``{name: arrays, path: labelled.npz}``): its train
    #: split is the kNN memory, its test split is scored. Needed when the training data has
    #: no labels (an unlabelled image folder); without it such a run skips evaluation.
    data: Node | None = None


@dataclasses.dataclass
class MonitorConfig:
    """``monitor:`` — collapse diagnostics of a fixed probe batch during training.

    diagnostics: registry names of kind ``diagnostic`` (or ``{name: ..., params}``); empty
    turns the monitor off. Measured at the first logging step and then at the first logging
    step at least ``every`` steps after the previous measurement. ``collapse_std`` /
    ``collapse_rank``: warn (and with ``stop_on_collapse`` stop) when the ``embedding_std`` /
    ``effective_rank`` diagnostic falls below them. ``collapse_below`` / ``collapse_above``:
    the same for any configured diagnostic, ``{name: threshold}`` (e.g. DINO's uniform
    collapse: ``collapse_above: {softmax_entropy: 0.999}``).
    """

    diagnostics: list[Union[str, Node]] = dataclasses.field(default_factory=list)
    every: int = bounded(100, minimum=1)
    probe_size: int = bounded(512, minimum=2)
    split: Literal["train", "test"] = "train"
    #: ``embed``: the representation; ``project``: the projection head's output, for bundles
    #: that define ``project(x)`` (collapse shows there first).
    source: Literal["embed", "project"] = "embed"
    collapse_std: float | None = None
    collapse_rank: float | None = None
    collapse_below: dict[str, float] = dataclasses.field(default_factory=dict)
    collapse_above: dict[str, float] = dataclasses.field(default_factory=dict)
    #: Measurements before this step are logged but not checked: a randomly initialised
    #: network, and BatchNorm running statistics that have not caught up, look collapsed.
    warmup_steps: int = bounded(0, minimum=0)
    stop_on_collapse: bool = False


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "trainer": TrainerConfig,
    "eval": EvalConfig,
    "monitor": MonitorConfig,
}
TOP_LEVEL_KEYS = ("seed", "objective", *SECTIONS)
CONTEXT_KEYS = ("in_channels", "image_size", "num_classes", "num_train", "modality_shapes")


# --------------------------------------------------------------------------- loading
def load_pipeline(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Read a pipeline YAML, apply dotlist ``overrides`` and check its top-level shape."""
    path = Path(path)
    if path.is_dir():
        hint = f" (or --resume {path} to continue the run in it)" if (path / "config.yaml").is_file() else ""
        raise ConfigError(f"{path} is a folder, not a pipeline file; give the pipeline's YAML file{hint}.")
    if not path.is_file():
        raise ConfigError(f"pipeline file {str(path)!r} does not exist.")
    try:
        cfg = OmegaConf.load(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: a pipeline must be a mapping of sections, got a {type(cfg).__name__}.")
    cfg = apply_overrides(cfg, overrides)
    check_top_level(cfg, source=str(path))
    return cfg


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Merge ``key.path=value`` overrides (omegaconf dotlist form)."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(
                f"override {item!r} is not of the form key.path=value (for example optim.lr=0.1)."
            )
        key = item.split("=", 1)[0]
        if key.split(".")[0] not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"override {item!r}: unknown section {key.split('.')[0]!r}."
                f"{did_you_mean(key.split('.')[0], TOP_LEVEL_KEYS)} Sections: {', '.join(TOP_LEVEL_KEYS)}."
            )
    if not overrides:
        return cfg
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"could not apply overrides {list(overrides)}: {exc}".replace("\n", " ")) from None


def to_container(cfg: DictConfig | Mapping) -> Node:
    """Plain dict with interpolations resolved; bad interpolations become ConfigErrors."""
    if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig):
        return dict(cfg)
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{exc}".replace("\n", " ")) from None


def check_top_level(cfg: DictConfig | Mapping, source: str = "pipeline") -> None:
    node = to_container(cfg)
    for key in node:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"{key}: unknown section in {source}.{did_you_mean(key, TOP_LEVEL_KEYS)} "
                f"Sections: {', '.join(TOP_LEVEL_KEYS)}."
            )
    if "objective" not in node:
        raise ConfigError(f"objective: missing in {source}; name the objective to train, e.g. objective: {{name: moco}}.")


def section(cfg: DictConfig | Mapping, name: str) -> Any:
    """The validated dataclass of one section (``data``, ``optim``, ...), defaults filled in."""
    node = to_container(cfg).get(name) or {}
    if not isinstance(node, Mapping):
        raise ConfigError(f"{name}: expected a mapping of settings, got {node!r}.")
    params = validate_params(SECTIONS[name], node, name, what=f"section {name!r}")
    value = SECTIONS[name](**params)
    check_bounds(value, name)
    return value


# --------------------------------------------------------------------------- types
def type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def check_type(value: Any, tp: Any) -> bool:
    """Whether ``value`` (from YAML) fits annotation ``tp``. Unknown annotations accept anything."""
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return any(check_type(value, a) for a in args)
    if origin is Literal:
        return value in args
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple, ListConfig)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(check_type(v, a) for v, a in zip(value, args))
        inner = args[0] if args else Any
        return all(check_type(v, inner) for v in value)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return isinstance(value, Mapping)
    return True


def union_members(tp: Any) -> tuple[Any, ...]:
    """The members of a Union / Optional annotation, or ``(tp,)``."""
    return typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)


def part_kind(tp: Any) -> str | None:
    """The registry kind whose interface ``tp`` (possibly Optional) names, else None."""
    for candidate in union_members(tp):
        for kind, interface in PART_KINDS.items():
            if isinstance(candidate, type) and issubclass(candidate, interface):
                return kind
    return None


def parameters_of(factory: Callable) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    target = factory.__init__ if isinstance(factory, type) else factory
    sig = inspect.signature(factory)
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    params = {
        n: p
        for n, p in sig.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return params, hints


# --------------------------------------------------------------------------- validation
def validate_params(
    factory: Callable,
    node: Mapping[str, Any],
    path: str,
    *,
    what: str,
    context: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """Check ``node`` against ``factory``'s signature and return the keyword arguments.

    Nested part parameters (annotated with a part interface) are built recursively from
    their ``{name: ...}`` mapping when ``registry`` is given.
    """
    params, hints = parameters_of(factory)
    context = context or {}
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())
    out: dict[str, Any] = {}
    for key, value in node.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in params:
            if accepts_any:
                out[key] = value
                continue
            allowed = ", ".join(n for n in params if n not in CONTEXT_KEYS) or "none"
            raise ConfigError(
                f"{key_path}: unknown parameter of {what}.{did_you_mean(str(key), params)} Allowed: {allowed}."
            )
        tp = hints.get(key, params[key].annotation)
        kind = part_kind(tp)
        if kind is not None and value is not None:
            literal = isinstance(value, str) and any(typing.get_origin(a) is Literal and value in typing.get_args(a)
                                                      for a in union_members(tp))
            if isinstance(value, (Mapping, str)) and not literal:  # a part: {name: ..., parameters} or a bare name
                out[key] = value if registry is None else build(registry, kind, value, key_path, context)
                continue
            switches = [a for a in union_members(tp) if a in (bool, int, float)]  # e.g. predictor: true | false
            if not literal and not any(check_type(value, a) for a in switches):
                raise ConfigError(f"{key_path}: expected a {kind} as {{name: ..., parameters...}} for {what}, "
                                  f"got {value!r}.")
        if value == "???":
            raise ConfigError(f"{key_path}: required value is missing ('???') for {what}.")
        if not check_type(value, tp):
            raise ConfigError(
                f"{key_path}: expected {type_name(tp)} for {what}, got {value!r} ({type(value).__name__})."
            )
        out[key] = list(value) if isinstance(value, ListConfig) else value
    for name, p in params.items():
        if name in out:
            continue
        if name in context:
            out[name] = context[name]
        elif p.default is inspect.Parameter.empty:
            raise ConfigError(
                f"{path + '.' if path else ''}{name}: missing required parameter of {what}"
                f" (expected {type_name(hints.get(name, p.annotation))})."
            )
    return out


def build(
    registry: Registry, kind: str, node: Any, path: str, context: Mapping[str, Any] | None = None
) -> Any:
    """Build one component of ``kind`` from ``node`` (``{name: ..., params...}`` or a bare name)."""
    if isinstance(node, str):
        node = {"name": node}
    if isinstance(node, DictConfig):
        node = to_container(node)
    if not isinstance(node, Mapping):
        raise ConfigError(f"{path}: expected a {kind} as {{name: ..., parameters...}}, got {node!r}.")
    node = dict(node)
    name = node.pop("name", None)
    if not isinstance(name, str):
        names = ", ".join(registry.names(kind))
        raise ConfigError(f"{path}.name: missing; name a registered {kind}: {names}.")
    try:
        entry = registry.get(kind, name)
    except RegistryError as exc:
        raise ConfigError(f"{path}.name: {exc}") from None
    params = validate_params(
        entry.factory, node, path, what=f"{kind} {name!r}", context=context, registry=registry
    )
    try:
        return entry.factory(**params)
    except (ValueError, TypeError) as exc:
        # Components validate their arguments in the constructor; name where it came from.
        raise ConfigError(f"{path}: {kind} {name!r} rejected its parameters: {exc}") from None
