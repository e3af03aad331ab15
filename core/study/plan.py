"""Planning a study: each variant x seed's pipeline, resolved, validated and keyed.

Each run's pipeline is the base pipeline with, in this order, the study's ``overrides``,
the budget (``trainer.max_steps`` / ``trainer.max_minutes``, the other one null, and
``trainer.epochs=null``), the variant's overrides and ``seed=k``; ``embedding_std`` and
``effective_rank`` are appended to ``monitor.diagnostics`` when missing, so every study
reports them. The run folder is ``<variant-slug>-s<seed>-<hash>`` under the study folder,
where ``hash`` is the first 10 hex digits of the SHA-256 of the resolved pipeline (defaults
filled in; JSON with sorted keys; ``trainer.progress`` / ``out_dir`` / ``run_name`` left
out, they do not change what is trained). Changing a variant gives it a new folder, so only
it runs again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from ..config import apply_overrides, check_top_level, load_pipeline
from ..engine import CHECKPOINT_NAME, build_trainer, resolved_config, settings_from_config
from ..errors import ConfigError, SelfsupError
from .execute import RunRecord, read_record
from .spec import StudySpec, slug

#: Diagnostics every study reports (added to ``monitor.diagnostics`` when missing).
STUDY_DIAGNOSTICS = ("embedding_std", "effective_rank")
#: Keys of the resolved pipeline that do not change what is trained: not hashed.
COSMETIC_KEYS = (("trainer", "progress"), ("trainer", "out_dir"), ("trainer", "run_name"))
HASH_LENGTH = 10


@dataclass
class PlannedRun:
    """One variant x seed: its pipeline, resolved and keyed, and its folder."""

    index: int
    variant: str
    seed: int
    #: The variant's own overrides (the CSV's ``overrides`` column).
    overrides: tuple[str, ...]
    config: DictConfig
    resolved: dict[str, Any]
    key: str
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.variant} seed {self.seed}"

    def read_record(self) -> RunRecord | None:
        """The run's ``result.json``, or None."""
        return read_record(self.run_dir)

    def state(self) -> Literal["done", "resume", "new"]:
        """``done``: a final result; ``resume``: a checkpoint without one; ``new``: nothing to continue."""
        record = self.read_record()
        if record is not None and record.final:
            return "done"
        return "resume" if (self.run_dir / CHECKPOINT_NAME).is_file() else "new"


def default_out_dir(spec: StudySpec) -> Path:
    return Path("runs") / "studies" / slug(spec.name, limit=100)


def config_hash(resolved: dict[str, Any]) -> str:
    """First :data:`HASH_LENGTH` hex digits of the SHA-256 of the resolved pipeline (cosmetic keys left out)."""
    node = copy.deepcopy(resolved)
    for section, key in COSMETIC_KEYS:
        if isinstance(node.get(section), dict):
            node[section].pop(key, None)
    text = json.dumps(node, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def _diagnostic_name(node: Any) -> Any:
    return node.get("name") if isinstance(node, dict) else node


def _with_study_diagnostics(cfg: DictConfig) -> DictConfig:
    """``cfg`` with :data:`STUDY_DIAGNOSTICS` appended to ``monitor.diagnostics`` where missing."""
    settings = settings_from_config(cfg)  # validates monitor.diagnostics' type first
    names = {_diagnostic_name(d) for d in settings.monitor.diagnostics}
    missing = [name for name in STUDY_DIAGNOSTICS if name not in names]
    if not missing:
        return cfg
    existing = OmegaConf.select(cfg, "monitor.diagnostics", default=None)
    current = OmegaConf.to_container(existing, resolve=True) if existing is not None else []
    cfg = copy.deepcopy(cfg)
    OmegaConf.update(cfg, "monitor.diagnostics", [*current, *missing], merge=False)
    return cfg


def _check_study_needs(spec: StudySpec, variant: str, cfg: DictConfig) -> None:
    settings = settings_from_config(cfg)
    if not settings.trainer.eval_after:
        raise ConfigError(
            f"variant {variant!r}: trainer.eval_after is false, so the run would end without the final "
            f"{spec.metric} the study compares; remove that setting (in study file {spec.path})."
        )
    if spec.metric == "linear_acc" and not settings.eval.linear_probe:
        raise ConfigError(
            f"metric: linear_acc needs eval.linear_probe=true, and variant {variant!r} turns it off "
            f"(in study file {spec.path})."
        )


def plan_study(spec: StudySpec, out_dir: Path | None = None) -> list[PlannedRun]:
    """Resolve every variant x seed's pipeline and key its run folder (nothing is built).

    Errors in the pipeline sections (unknown keys, bad types, bad overrides) are raised here
    as :class:`ConfigError` naming the variant; components are checked by :func:`validate_runs`.
    """
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(spec)
    bases: dict[Path, Any] = {}
    runs: list[PlannedRun] = []
    for variant in spec.variants:
        pipeline = variant.pipeline or spec.pipeline
        if pipeline not in bases:
            bases[pipeline] = load_pipeline(pipeline)
        for seed in spec.seeds:
            overrides = [*spec.overrides, *spec.budget.overrides(), *variant.overrides, f"seed={seed}"]
            try:
                cfg = apply_overrides(bases[pipeline], overrides)
                check_top_level(cfg, source=str(pipeline))
                cfg = _with_study_diagnostics(cfg)
                resolved = resolved_config(cfg, settings_from_config(cfg))
            except ConfigError as exc:
                raise ConfigError(f"variant {variant.name!r}: {exc} (study file {spec.path})") from None
            _check_study_needs(spec, variant.name, cfg)
            key = f"{slug(variant.name)}-s{seed}-{config_hash(resolved)}"
            runs.append(PlannedRun(len(runs), variant.name, seed, variant.overrides, cfg, resolved, key,
                                   out_dir / key))
    return runs


def validate_runs(runs: Sequence[PlannedRun], spec: StudySpec | None = None) -> None:
    """Build every run's trainer (data, transform, objective, monitor) in a scratch folder and
    drop it: every parameter error surfaces before anything trains, naming the variant.

    Seeds do not change what is built, so each variant is built once; runs with a final
    result are not built again.
    """
    seen: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="selfsup-study-") as scratch:
        for run in runs:
            if run.variant in seen or run.state() == "done":
                continue
            seen.add(run.variant)
            try:
                trainer = build_trainer(run.config, run_dir=Path(scratch) / run.key)
            except SelfsupError as exc:
                where = f" (study file {spec.path})" if spec is not None else ""
                raise type(exc)(f"variant {run.variant!r}: {exc}{where}") from None
            del trainer
