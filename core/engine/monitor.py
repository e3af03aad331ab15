"""Collapse monitor: diagnostics of a fixed probe batch during training.

Every ``monitor.every`` steps (at the next logging step) the monitor embeds a fixed probe
batch with ``objective.embed`` — the clean images and two augmented views drawn once, so
successive measurements are comparable — and runs the configured diagnostics (registry
kind ``diagnostic``). Their values join the metrics row (``metrics.csv`` / ``.jsonl``); the
last ones go to ``metrics.json``. When ``embedding_std`` or ``effective_rank`` falls below
``monitor.collapse_std`` / ``monitor.collapse_rank`` the monitor warns once and, with
``monitor.stop_on_collapse``, stops the run (checkpoint kept) with :class:`CollapseDetected`.

The core never imports plugins: diagnostics are built through the registry by name.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..config import MonitorConfig, build
from ..data import DataSplits
from ..errors import CollapseDetected, ConfigError, TrainingDiverged
from ..evaluation import extract_features
from ..interfaces import Diagnostic, Objective, ProbeEmbeddings, ViewTransform
from ..registry import Registry

#: The diagnostic names the collapse thresholds compare against.
STD_METRIC = "embedding_std"
RANK_METRIC = "effective_rank"


@dataclass
class CollapseEvent:
    """The first measurement that crossed a collapse threshold: ``key`` is its monitor
    setting (``collapse_std``, ``collapse_rank``, ``collapse_below.<name>``, ``collapse_above.<name>``)."""

    step: int
    metric: str
    value: float
    threshold: float
    key: str = ""

    def message(self, dim: int | None = None) -> str:
        key = self.key or ("collapse_std" if self.metric == STD_METRIC else "collapse_rank")
        sign = ">" if key.startswith("collapse_above") else "<"
        text = (f"collapse detected at step {self.step}: {self.metric} {self.value:.4g} "
                f"{sign} monitor.{key} {self.threshold:g}")
        if self.metric == STD_METRIC and dim:
            text += f" (spread-out embeddings of width {dim} sit near 1/sqrt({dim}) = {1 / math.sqrt(dim):.3g})"
        return text


def build_diagnostics(registry: Registry, cfg: MonitorConfig) -> dict[str, Diagnostic]:
    """Build ``monitor.diagnostics`` (names or ``{name: ..., params}``) through the registry."""
    out: dict[str, Diagnostic] = {}
    for i, node in enumerate(cfg.diagnostics):
        path = f"monitor.diagnostics.{i}"
        diagnostic = build(registry, "diagnostic", node, path)
        name = node if isinstance(node, str) else node["name"]
        if name in out:
            raise ConfigError(f"{path}: diagnostic {name!r} is listed twice; each name is one metric column.")
        if not callable(diagnostic):
            raise ConfigError(
                f"{path}: diagnostic {name!r} did not build a callable (got {type(diagnostic).__name__})."
            )
        out[name] = diagnostic
    return out


def _check_settings(cfg: MonitorConfig, names: list[str]) -> None:
    if cfg.every < 1:
        raise ConfigError(f"monitor.every: must be a positive number of steps, got {cfg.every}.")
    if cfg.probe_size < 2:
        raise ConfigError(f"monitor.probe_size: must be at least 2 samples, got {cfg.probe_size}.")
    if cfg.warmup_steps < 0:
        raise ConfigError(f"monitor.warmup_steps: must be >= 0, got {cfg.warmup_steps}.")
    for key, metric in (("collapse_std", STD_METRIC), ("collapse_rank", RANK_METRIC)):
        threshold = getattr(cfg, key)
        if threshold is None:
            continue
        if threshold < 0:
            raise ConfigError(f"monitor.{key}: must be >= 0 (or null to disable), got {threshold}.")
        if metric not in names:
            raise ConfigError(
                f"monitor.{key}: compares the {metric!r} diagnostic, which is not in monitor.diagnostics "
                f"({', '.join(names) or 'empty'}); add it or set monitor.{key}: null."
            )
    for key in ("collapse_below", "collapse_above"):
        for metric, threshold in getattr(cfg, key).items():
            if metric not in names:
                raise ConfigError(
                    f"monitor.{key}.{metric}: {metric!r} is not in monitor.diagnostics "
                    f"({', '.join(names) or 'empty'}); add it there or remove the threshold."
                )
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
                raise ConfigError(f"monitor.{key}.{metric}: expected a finite number, got {threshold!r}.")
    if cfg.stop_on_collapse and not thresholds(cfg):
        raise ConfigError("monitor.stop_on_collapse: set a threshold too (monitor.collapse_std, collapse_rank, "
                          "collapse_below or collapse_above).")


def thresholds(cfg: MonitorConfig) -> list[tuple[str, str, float, bool]]:
    """Every configured threshold as ``(setting key, diagnostic, threshold, collapses_above)``."""
    out = [(key, metric, float(getattr(cfg, key)), False)
           for key, metric in (("collapse_std", STD_METRIC), ("collapse_rank", RANK_METRIC))
           if getattr(cfg, key) is not None]
    out += [(f"collapse_below.{m}", m, float(t), False) for m, t in cfg.collapse_below.items()]
    out += [(f"collapse_above.{m}", m, float(t), True) for m, t in cfg.collapse_above.items()]
    return out


class Monitor:
    """Measures diagnostics of a fixed probe batch and watches for collapse.

    diagnostics: metric name -> callable ``ProbeEmbeddings -> float``. The probe is embedded
    with ``objective.embed`` or, with ``cfg.source == "project"``, ``objective.project``.
    The probe is ``cfg.probe_size`` samples of the ``cfg.split`` split drawn with ``seed``;
    its two views are drawn once with ``transform`` (none for multimodal data).
    """

    def __init__(
        self,
        cfg: MonitorConfig,
        diagnostics: Mapping[str, Callable[[ProbeEmbeddings], float]],
        data: DataSplits,
        transform: ViewTransform | None,
        device: torch.device,
        seed: int = 0,
    ) -> None:
        _check_settings(cfg, list(diagnostics))
        self.cfg = cfg
        self.diagnostics = dict(diagnostics)
        self.device = device
        split = data.test if cfg.split == "test" and data.test is not None else data.train  # unlabelled: no test
        n = min(cfg.probe_size, len(split))
        index = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed + 7919))[:n].sort().values
        probe = split.select(index.to(split.labels.device))
        self.inputs = probe.as_float(device)  # [n, C, H, W] or modality -> [n, T, F]
        self.labels = probe.labels.cpu()
        self.views: list[Tensor] = []
        if transform is not None and isinstance(self.inputs, Tensor):
            with torch.no_grad():
                generator = torch.Generator(device).manual_seed(seed + 7920)
                # two views at the image size: a multi-crop transform makes its global crops first
                count = max(2, int(getattr(transform, "global_crops", 2) or 2))
                self.views = [v.detach() for v in transform(self.inputs, count, generator)[:2]]
        for name, diagnostic in self.diagnostics.items():
            if getattr(diagnostic, "needs_views", False) and not self.views:
                raise ConfigError(
                    f"monitor.diagnostics: {name!r} compares two augmented views, but the pipeline makes none "
                    "(data.augment is null or the data is not images)."
                )
            if getattr(diagnostic, "needs_labels", False) and not bool((self.labels >= 0).any()):
                raise ConfigError(f"monitor.diagnostics: {name!r} needs labelled data, but the probe has no labels.")
        self.last_step: int | None = None
        self.last_values: dict[str, float] = {}
        self.collapse: CollapseEvent | None = None
        self.stopped = False
        self._dim: int | None = None
        #: Called with the warning text when a collapse is flagged (the trainer routes it to
        #: its callbacks' ``on_message``); the monitor prints nothing itself.
        self.on_warning: Callable[[str], None] | None = None

    @classmethod
    def create(
        cls,
        cfg: MonitorConfig,
        diagnostics: Mapping[str, Callable[[ProbeEmbeddings], float]] | None,
        objective: Objective,
        data: DataSplits,
        transform: ViewTransform | None,
        device: torch.device,
        seed: int = 0,
    ) -> "Monitor | None":
        """The monitor a run asks for, or None (no diagnostics configured or given)."""
        if diagnostics is None and cfg.diagnostics:
            from ..plugin_manager import default_registry

            diagnostics = build_diagnostics(default_registry(), cfg)
        if not diagnostics:
            return None
        if not callable(getattr(objective, cfg.source, None)):
            raise ConfigError(
                f"monitor.source: {type(objective).__name__} has no {cfg.source}(x) method; use source: embed."
            )
        return cls(cfg, diagnostics, data, transform, device, seed)

    # ------------------------------------------------------------------ measuring
    def _embed(self, objective: Objective, inputs: Tensor | dict[str, Tensor], source: str) -> Tensor:
        embed = getattr(objective, source)  # embed or project, checked by create()
        if isinstance(inputs, Tensor):
            return extract_features(embed, inputs, 512, self.device)
        return embed(inputs).float().cpu()

    @torch.no_grad()
    def measure(self, objective: Objective) -> dict[str, float]:
        """Embed the probe (eval mode) and run every diagnostic: name -> value."""
        was_training = objective.training
        objective.eval()
        try:
            source = self.cfg.source
            embeddings = self._embed(objective, self.inputs, source)
            views = [self._embed(objective, v, source) for v in self.views]
            representation = embeddings if source == "embed" else self._embed(objective, self.inputs, "embed")
        finally:
            objective.train(was_training)
        self._dim = int(embeddings.shape[1])
        if not bool(torch.isfinite(embeddings).all()) or not all(bool(torch.isfinite(v).all()) for v in views):
            raise TrainingDiverged(
                "the collapse monitor's probe embeddings are not finite (NaN or inf): the weights diverged; "
                "the last good checkpoint is kept. Try a lower optim.lr, trainer.grad_clip=1.0, or "
                "trainer.precision=fp32."
            )
        probe = ProbeEmbeddings(embeddings, *(views or [None, None]), labels=self.labels, representation=representation)
        return {name: float(diagnostic(probe)) for name, diagnostic in self.diagnostics.items()}

    def _check(self, values: dict[str, float], step: int, stop: Callable[[], None] | None) -> None:
        if self.collapse is not None or step < self.cfg.warmup_steps:
            return
        for key, metric, threshold, above in thresholds(self.cfg):
            value = values.get(metric)
            if value is not None and (value > threshold if above else value < threshold):
                self.collapse = CollapseEvent(step, metric, value, threshold, key)
                break
        if self.collapse is None:
            return
        action = (
            "stopping the run (monitor.stop_on_collapse)." if self.cfg.stop_on_collapse and stop is not None
            else "training continues (monitor.stop_on_collapse=true stops it)."
        )
        if self.on_warning is not None:
            self.on_warning(f"{self.collapse.message(self._dim)}; {action}")
        if self.cfg.stop_on_collapse and stop is not None:
            self.stopped = True
            stop()

    def on_log(self, objective: Objective, step: int, stop: Callable[[], None] | None = None) -> dict[str, float]:
        """Called at each logging step: measure when ``every`` steps have passed (and at the
        first call), check the thresholds, and return the values to add to the metrics row."""
        if self.last_step is not None and step - self.last_step < self.cfg.every:
            return {}
        values = self.measure(objective)
        self.last_step, self.last_values = step, values
        self._check(values, step, stop)
        return values

    def summary(self, objective: Objective, step: int) -> dict[str, Any]:
        """For ``metrics.json``: the values at ``step`` (measured now if stale) and any collapse."""
        if self.last_step != step or not self.last_values:
            self.last_step, self.last_values = step, self.measure(objective)
            self._check(self.last_values, step, None)
        return {
            "step": step,
            "values": dict(self.last_values),
            "collapse": dataclasses.asdict(self.collapse) if self.collapse else None,
            "thresholds": {key: threshold for key, _, threshold, _ in thresholds(self.cfg)},
        }

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the last measurement and the collapse event (plain data)."""
        return {"last_step": self.last_step, "last_values": dict(self.last_values),
                "collapse": dataclasses.asdict(self.collapse) if self.collapse else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`: a resumed run keeps the step its collapse was flagged at."""
        self.last_step = state.get("last_step")
        self.last_values = dict(state.get("last_values") or {})
        self.collapse = CollapseEvent(**state["collapse"]) if state.get("collapse") else None

    def collapse_error(self, run_dir: Any) -> CollapseDetected:
        """The error the trainer raises after stopping a collapsed run."""
        assert self.collapse is not None
        return CollapseDetected(
            f"{self.collapse.message(self._dim)}. The run stopped (monitor.stop_on_collapse); its checkpoint "
            f"and metrics.jsonl are in {run_dir}. Lower the learning rate, check the stop-gradient / "
            "predictor / variance terms, or set monitor.stop_on_collapse=false to watch it go on."
        )
