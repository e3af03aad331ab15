"""Study files: parse and validate a study YAML into :class:`StudySpec`.

A study file names a base pipeline, the variants (a name and a list of overrides each)
and/or a grid (key -> list of values; the cartesian product), a budget per run, seeds and
the metric the plot compares::

    name: collapse_simsiam                  # default: the file's stem
    pipeline: ../collapse_study.yaml        # base pipeline, relative to the study file
    overrides: [trainer.progress=false]     # applied to every variant
    budget: {steps: 300}                    # and/or {minutes: 3}; per variant x seed
    seeds: [0]
    metric: knn_acc                         # or linear_acc
    variants:
      - {name: simsiam, overrides: []}
      - {name: no_stop_gradient, overrides: [objective.stop_gradient=false]}
      - {name: other, pipeline: other.yaml, overrides: []}   # a base pipeline of its own
    grid:                                   # optional
      objective.sampler.name: [in_batch, momentum_queue]

With both variants and a grid each variant is crossed with each grid point
(``variant/key=value,...``); with a grid alone the names are the ``key=value`` pairs. Every
mistake is a one-paragraph :class:`~selfsup.errors.ConfigError` naming the key path and
the study file. Nothing here reads the pipeline: :mod:`selfsup.study.runner` resolves and
validates each run's pipeline.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..errors import ConfigError, did_you_mean

STUDY_KEYS = ("name", "description", "pipeline", "overrides", "budget", "seeds", "metric", "variants", "grid")
VARIANT_KEYS = ("name", "overrides", "pipeline")
BUDGET_KEYS = ("steps", "minutes")
METRICS = ("knn_acc", "linear_acc")


@dataclass(frozen=True)
class Budget:
    """Training budget of each run: optimiser steps and/or minutes of training time.

    A budget replaces the pipeline's limits (``trainer.epochs``, ``trainer.max_steps``,
    ``trainer.max_minutes``); with both, the run stops at whichever comes first. Neither:
    the pipeline's own length.
    """

    steps: int | None = None
    minutes: float | None = None

    def overrides(self) -> list[str]:
        """``trainer.max_steps`` / ``trainer.max_minutes`` (the one not given: null) and ``trainer.epochs=null``."""
        if self.steps is None and self.minutes is None:
            return []
        steps = "null" if self.steps is None else str(self.steps)
        minutes = "null" if self.minutes is None else f"{self.minutes:g}"
        return [f"trainer.max_steps={steps}", f"trainer.max_minutes={minutes}", "trainer.epochs=null"]

    def describe(self) -> str:
        parts = []
        if self.steps is not None:
            parts.append(f"{self.steps} steps")
        if self.minutes is not None:
            parts.append(f"{self.minutes:g} minutes")
        return " or ".join(parts) if parts else "the pipeline's own length"


@dataclass(frozen=True)
class Variant:
    """One named variant: overrides of the base pipeline (after the study's own); ``pipeline``:
    a base pipeline of its own instead of the study's (e.g. a method with another encoder)."""

    name: str
    overrides: tuple[str, ...] = ()
    pipeline: Path | None = None


@dataclass(frozen=True)
class StudySpec:
    """A validated study file. ``variants`` is the expanded list (variants x grid points)."""

    name: str
    path: Path
    pipeline: Path
    variants: tuple[Variant, ...]
    overrides: tuple[str, ...] = ()
    budget: Budget = field(default_factory=Budget)
    seeds: tuple[int, ...] = (0,)
    metric: str = "knn_acc"
    description: str = ""
    #: With variants and a grid both: the variants' names (rows) and the grid points' names
    #: (columns) whose crossing ``row/column`` names each expanded variant; else empty.
    rows: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    grid_keys: tuple[str, ...] = ()

    def with_budget(self, steps: int | None = None, minutes: float | None = None) -> "StudySpec":
        """The same study with its budget replaced (``--steps`` / ``--minutes``); unchanged if both are None."""
        if steps is None and minutes is None:
            return self
        for key, value in (("--steps", steps), ("--minutes", minutes)):
            if value is not None and not value > 0:
                raise ConfigError(f"{key}: must be > 0, got {value!r}.")
        return replace(self, budget=Budget(steps=steps, minutes=minutes))


# --------------------------------------------------------------------------- helpers
def format_value(value: Any) -> str:
    """A grid value as it goes into a ``key=value`` override (YAML flow syntax)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def label_value(value: Any) -> str:
    """A grid value as it appears in a variant's name: a part's mapping ``{name: rbf,
    bandwidth: 8.0}`` reads ``rbf(bandwidth=8.0)``; anything else as in its override."""
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        params = ",".join(f"{k}={format_value(v)}" for k, v in value.items() if k != "name")
        return f"{value['name']}({params})" if params else value["name"]
    return format_value(value)


def slug(name: str, limit: int = 60) -> str:
    """A file-name-safe form of a variant name (``a/b=c`` -> ``a_b-c``), at most ``limit`` characters."""
    text = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("=", "-")).strip("._-") or "variant"
    return text[:limit].rstrip("._-") or "variant"


def _error(path: Path, key: str, text: str) -> ConfigError:
    return ConfigError(f"{key}: {text} (in study file {path}).")


def _plain(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=False)
    return node


def _overrides(value: Any, key: str, path: Path) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise _error(path, key, f"expected a list of key.path=value strings, got {value!r}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or "=" not in item or item.startswith("="):
            hint = (" (write it as a string, key.path=value, not key: value)"
                    if isinstance(item, Mapping) else "")
            raise _error(path, f"{key}.{i}", f"expected an override of the form key.path=value, got {item!r}{hint}")
        out.append(item.strip())
    return tuple(out)


def _is_positive_number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    if integer:
        return isinstance(value, int) and value > 0
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _budget(value: Any, path: Path) -> Budget:
    if value is None:
        return Budget()
    if not isinstance(value, Mapping):
        raise _error(path, "budget", f"expected a mapping {{steps: N}} or {{minutes: M}}, got {value!r}")
    for key in value:
        if key not in BUDGET_KEYS:
            raise _error(path, f"budget.{key}", f"unknown key.{did_you_mean(str(key), BUDGET_KEYS)} "
                         f"Allowed: {', '.join(BUDGET_KEYS)}")
    steps, minutes = value.get("steps"), value.get("minutes")
    if steps is not None and not _is_positive_number(steps, integer=True):
        raise _error(path, "budget.steps", f"expected a positive integer number of optimiser steps, got {steps!r}")
    if minutes is not None and not _is_positive_number(minutes, integer=False):
        raise _error(path, "budget.minutes", f"expected a positive number of minutes, got {minutes!r}")
    return Budget(steps=steps, minutes=None if minutes is None else float(minutes))


def _seeds(value: Any, path: Path) -> tuple[int, ...]:
    if value is None:
        return (0,)
    if not isinstance(value, (list, tuple)) or not value:
        raise _error(path, "seeds", f"expected a non-empty list of integers, e.g. [0, 1, 2], got {value!r}")
    for i, seed in enumerate(value):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise _error(path, f"seeds.{i}", f"expected an integer, got {seed!r}")
    if len(set(value)) != len(value):
        raise _error(path, "seeds", f"lists a seed twice: {list(value)}")
    return tuple(value)


def _variants(value: Any, path: Path) -> list[Variant]:
    if not isinstance(value, (list, tuple)):
        raise _error(path, "variants", f"expected a list of {{name: ..., overrides: [...]}}, got {value!r}")
    if not value:
        raise _error(path, "variants", "the list is empty; give at least one variant (or leave the key out "
                     "and use a grid)")
    out: list[Variant] = []
    for i, item in enumerate(value):
        key = f"variants.{i}"
        if not isinstance(item, Mapping):
            raise _error(path, key, f"expected a mapping {{name: ..., overrides: [...]}}, got {item!r}")
        for k in item:
            if k not in VARIANT_KEYS:
                raise _error(path, f"{key}.{k}", f"unknown key.{did_you_mean(str(k), VARIANT_KEYS)} "
                             f"Allowed: {', '.join(VARIANT_KEYS)}")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _error(path, f"{key}.name", f"expected a non-empty string, got {name!r}")
        pipeline = _pipeline_path(item["pipeline"], f"{key}.pipeline", path) if "pipeline" in item else None
        out.append(Variant(name.strip(), _overrides(item.get("overrides"), f"{key}.overrides", path), pipeline))
    return out


def _pipeline_path(value: Any, key: str, path: Path) -> Path:
    """A pipeline file named in the study file, relative to it; it must exist."""
    if not isinstance(value, str) or not value:
        raise _error(path, key, f"expected the path of a pipeline YAML (relative to the study file), got {value!r}")
    resolved = Path(value) if Path(value).is_absolute() else path.parent / value
    if not resolved.is_file():
        raise _error(path, key, f"{value!r} does not exist (looked for {resolved})")
    return resolved


def _grid(value: Any, path: Path) -> list[tuple[str, list[Any]]]:
    if not isinstance(value, Mapping):
        raise _error(path, "grid", f"expected a mapping key.path -> list of values, got {value!r}")
    if not value:
        raise _error(path, "grid", "the mapping is empty; give at least one key.path: [values]")
    out = []
    for key, values in value.items():
        if not isinstance(key, str) or not key or "=" in key:
            raise _error(path, f"grid.{key}", "expected a key.path of the pipeline")
        if not isinstance(values, (list, tuple)) or not values:
            raise _error(path, f"grid.{key}", f"expected a non-empty list of values, got {values!r}")
        if len({format_value(v) for v in values}) != len(values):
            raise _error(path, f"grid.{key}", f"lists a value twice: {list(values)}")
        out.append((key, list(values)))
    return out


def expand(variants: list[Variant] | None, grid: list[tuple[str, list[Any]]] | None) -> list[Variant]:
    """Variants x grid points; names ``variant/key=value,...`` (grid alone: ``key=value,...``)."""
    if not grid:
        return list(variants or [])
    keys = [k for k, _ in grid]
    points = []
    for combo in itertools.product(*(values for _, values in grid)):
        overrides = tuple(f"{k}={format_value(v)}" for k, v in zip(keys, combo))
        points.append((",".join(f"{k}={label_value(v)}" for k, v in zip(keys, combo)), overrides))
    if not variants:
        return [Variant(name, overrides) for name, overrides in points]
    return [Variant(f"{v.name}/{name}", v.overrides + overrides, v.pipeline) for v in variants
            for name, overrides in points]


# --------------------------------------------------------------------------- loading
def parse_study(node: Mapping[str, Any], path: Path) -> StudySpec:
    """Validate a study mapping (as read from ``path``; relative paths resolve against its folder)."""
    node = _plain(node)
    if not isinstance(node, Mapping):
        raise ConfigError(f"study file {path}: expected a mapping of study keys ({', '.join(STUDY_KEYS)}), "
                          f"got a {type(node).__name__}.")
    for key in node:
        if key not in STUDY_KEYS:
            raise _error(path, str(key), f"unknown key.{did_you_mean(str(key), STUDY_KEYS)} "
                         f"Allowed: {', '.join(STUDY_KEYS)}")
    name = node.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise _error(path, "name", f"expected a non-empty string, got {name!r}")
    description = node.get("description") or ""
    if not isinstance(description, str):
        raise _error(path, "description", f"expected a string, got {description!r}")
    pipeline_path = _pipeline_path(node.get("pipeline"), "pipeline", path)
    metric = node.get("metric", "knn_acc")
    if metric not in METRICS:
        raise _error(path, "metric", f"expected one of {', '.join(METRICS)}, got {metric!r}."
                     f"{did_you_mean(str(metric), METRICS)}".rstrip("."))
    if node.get("variants") is None and node.get("grid") is None:
        raise _error(path, "variants", "a study needs variants, a grid, or both")
    variants = _variants(node["variants"], path) if node.get("variants") is not None else None
    grid = _grid(node["grid"], path) if node.get("grid") is not None else None
    expanded = expand(variants, grid)
    seen: dict[str, str] = {}
    for i, variant in enumerate(expanded):
        where = f"variants.{i}.name" if not grid else "grid"
        folder = slug(variant.name)
        if variant.name in seen.values():
            raise _error(path, where, f"variant name {variant.name!r} is used twice; names must be unique")
        if folder in seen:
            raise _error(path, where, f"variant names {seen[folder]!r} and {variant.name!r} give the same folder "
                         f"name {folder!r}; rename one")
        seen[folder] = variant.name
    return StudySpec(
        name=name.strip(), path=path, pipeline=pipeline_path, variants=tuple(expanded),
        overrides=_overrides(node.get("overrides"), "overrides", path), budget=_budget(node.get("budget"), path),
        seeds=_seeds(node.get("seeds"), path), metric=metric, description=description.strip(),
        rows=tuple(v.name for v in variants) if variants and grid else (),
        columns=tuple(v.name for v in expand(None, grid)) if variants and grid else (),
        grid_keys=tuple(k for k, _ in grid or ()),
    )


def load_study(path: str | Path, steps: int | None = None, minutes: float | None = None) -> StudySpec:
    """Read and validate a study file; ``steps`` / ``minutes`` replace its budget."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {str(path)!r} does not exist.")
    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # yaml errors
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    return parse_study(node, path).with_budget(steps=steps, minutes=minutes)


def join_overrides(overrides: Sequence[str]) -> str:
    """Overrides as one line (the CSV column)."""
    return " ".join(overrides)
