"""The registry-wide conformance run: build each registered component small and check it.

Components are built by :func:`build_for_conformance` with :data:`~selfsup.testing.checks.CONTEXT`
filling the data parameters, :data:`~selfsup.testing.checks.DEFAULT_PARTS` filling required
part parameters, and the component's optional ``conformance_params`` attribute adding or
overriding parameters (a string there opts the component out, with that reason).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..config import CONTEXT_KEYS, build, parameters_of, part_kind
from ..errors import ConfigError
from ..kinds import CHECKED_KINDS, KINDS
from ..registry import Registry
from .checks import CONTEXT, DEFAULT_PARTS


class ConformanceSkip(Exception):
    """The component opted out of the registry-wide run (``conformance_params = "reason"``)."""


def conformance_params(factory: Callable[..., Any]) -> dict[str, Any]:
    """The factory's ``conformance_params`` (a mapping, or a string that opts it out)."""
    declared = getattr(factory, "conformance_params", None)
    if isinstance(declared, str):
        raise ConformanceSkip(declared)
    if declared is not None and not isinstance(declared, Mapping):
        raise TypeError(f"conformance_params must be a mapping or a string (opt-out reason), got {declared!r}")
    return dict(declared or {})


def build_for_conformance(registry: Registry, kind: str, name: str) -> tuple[Any, dict[str, int]]:
    """Build ``kind``/``name`` small, and the context (data shape) the checks should use."""
    factory = registry.get(kind, name).factory
    params = conformance_params(factory)
    context = {**CONTEXT, **{k: params[k] for k in CONTEXT_KEYS if k in params}}
    signature, hints = parameters_of(factory)
    for pname, p in signature.items():
        part = part_kind(hints.get(pname, p.annotation))
        if pname not in params and p.default is p.empty and part in DEFAULT_PARTS:
            params[pname] = dict(DEFAULT_PARTS[part])
    return build(registry, kind, {"name": name, **params}, f"{kind}.{name}", context), context


def input_shape(context: Mapping[str, int]) -> tuple[int, int, int]:
    """The ``[C, H, W]`` of the images a context describes."""
    return (context["in_channels"], context["image_size"], context["image_size"])


@dataclass(frozen=True)
class ConformanceResult:
    """The outcome of one component's checks: ``status`` is pass, fail or skip."""

    kind: str
    name: str
    provider: str
    status: Literal["pass", "fail", "skip"]
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"


def check_component(registry: Registry, kind: str, name: str) -> ConformanceResult:
    """Run the kit on one registered component; never raises for a failing component."""
    entry = registry.get(kind, name)
    provider = str(entry.provider)
    if kind not in CHECKED_KINDS:
        return ConformanceResult(kind, name, provider, "skip", f"no conformance check for kind {kind!r}")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # tiny tensors: threads only add overhead (and contention)
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(0)
            KINDS[kind].check(registry, name)
    except ConformanceSkip as skip:
        return ConformanceResult(kind, name, provider, "skip", f"opted out: {skip}")
    except AssertionError as exc:
        return ConformanceResult(kind, name, provider, "fail", str(exc) or "assertion failed")
    except Exception as exc:  # a component that crashes fails its check, it does not stop the run
        hint = ""
        if isinstance(exc, ConfigError):  # it could not be built with the kit's defaults
            hint = " (declare small test arguments in a `conformance_params` attribute)"
        return ConformanceResult(kind, name, provider, "fail", f"{type(exc).__name__}: {exc}{hint}")
    finally:
        torch.set_num_threads(threads)
    return ConformanceResult(kind, name, provider, "pass")


def normalize_package(name: str) -> str:
    """PEP 503 normalisation: ``Selfsup_Example.Plugin`` -> ``selfsup-example-plugin``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def run_conformance(
    registry: Registry, package: str | None = None, kinds: Iterable[str] | None = None
) -> list[ConformanceResult]:
    """:func:`check_component` for every entry (of ``package``'s distribution, of ``kinds``)."""
    wanted = set(kinds) if kinds is not None else None
    results = []
    for entry in registry.list():
        if wanted is not None and entry.kind not in wanted:
            continue
        if package is not None and normalize_package(entry.provider.package) != normalize_package(package):
            continue
        results.append(check_component(registry, entry.kind, entry.name))
    return results


def format_results(results: Iterable[ConformanceResult]) -> str:
    """A pass/fail table, one row per component, and a count line."""
    rows = [(r.kind, r.name, r.provider, r.status.upper() if r.status == "fail" else r.status,
             " ".join(r.detail.split())) for r in results]
    header = ("kind", "name", "package", "result", "detail")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row[:4], widths)) + "  " + row[4]
             for row in [header, *rows]]
    counts = {s: sum(r[3].lower() == s for r in rows) for s in ("pass", "fail", "skip")}
    lines.append(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped")
    return "\n".join(line.rstrip() for line in lines)


def plugin_registry(*plugins: object) -> Registry:
    """selfsup's built-ins plus ``plugins`` (modules with a ``selfsup_register`` hookimpl).

    For a plugin package's tests: no install needed, third-party autoloading off. A broken
    plugin raises :class:`~selfsup.errors.PluginError`.
    """
    from ..plugin_manager import load_registry, register_plugin

    loaded = load_registry(strict=True, autoload=False)
    for plugin in plugins:
        register_plugin(loaded, plugin)
    return loaded.registry
