"""Loading plugins with pluggy: hookspecs, entry points, provider attribution, failures.

pluggy carries registration, not lookup. :func:`load_registry` builds a
:class:`~selfsup.registry.Registry` by registering each plugin from the ``selfsup.plugins``
entry-point group (the built-ins included) and collecting the failures of broken ones.
Set ``SELFSUP_DISABLE_PLUGIN_AUTOLOAD=1`` to load only selfsup's own plugin, and
``SELFSUP_STRICT_PLUGINS=1`` to make a broken plugin an error instead of a warning.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import Provider, Registry

ENTRY_POINT_GROUP = "selfsup.plugins"
AUTOLOAD_ENV = "SELFSUP_DISABLE_PLUGIN_AUTOLOAD"
STRICT_ENV = "SELFSUP_STRICT_PLUGINS"
BUILTIN_DISTRIBUTION = "selfsup"
BUILTIN_MODULE = "selfsup.plugins.plugin"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, and why."""

    plugin: str
    provider: Provider
    reason: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} from {self.provider}: {self.reason}"


@dataclass
class LoadedPlugins:
    """The result of :func:`load_registry`."""

    registry: Registry
    manager: pluggy.PluginManager
    failures: list[PluginFailure] = field(default_factory=list)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def autoload_disabled() -> bool:
    return _env_flag(AUTOLOAD_ENV)


def strict_requested() -> bool:
    """Whether ``SELFSUP_STRICT_PLUGINS`` asks for broken plugins to be errors."""
    return _env_flag(STRICT_ENV)


def _distribution_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.dist.name if ep.dist else "", ep.name))


def _register_plugin(
    loaded: LoadedPlugins, name: str, provider: Provider, plugin: object | None, ep: metadata.EntryPoint | None, strict: bool
) -> None:
    """Load (if needed) and register one plugin; a failure is recorded, or raised if strict."""
    try:
        with loaded.registry.providing(provider):
            if plugin is None:
                plugin = ep.load()  # type: ignore[union-attr]
            loaded.manager.register(plugin, name=name)
    except Exception as exc:  # a broken plugin must not take the others down
        if plugin is not None and loaded.manager.is_registered(plugin):
            loaded.manager.unregister(plugin)
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())  # one line
        failure = PluginFailure(name, provider, f"{type(exc).__name__}: {message}")
        if strict:
            raise PluginError(str(failure)) from exc
        loaded.failures.append(failure)


def load_registry(strict: bool | None = None, autoload: bool | None = None) -> LoadedPlugins:
    """A fresh registry with every plugin of the entry-point group registered.

    strict: raise :class:`PluginError` on the first broken plugin instead of recording it
        (default: when ``SELFSUP_STRICT_PLUGINS`` is set).
    autoload: load third-party entry points (default: unless ``SELFSUP_DISABLE_PLUGIN_AUTOLOAD``
        is set). selfsup's own plugin is always loaded through its entry point.
    """
    if strict is None:
        strict = strict_requested()
    if autoload is None:
        autoload = not autoload_disabled()
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    registry = Registry()
    loaded = LoadedPlugins(registry, manager)
    # Historic: every plugin registered from now on is called with the registry at once.
    manager.hook.selfsup_register.call_historic(kwargs={"registry": registry})

    builtin_found = False
    for ep in _entry_points():
        dist_name = ep.dist.name if ep.dist else "unknown"
        is_builtin = dist_name == BUILTIN_DISTRIBUTION
        if not (is_builtin or autoload):
            continue
        builtin_found |= is_builtin and ep.value == BUILTIN_MODULE
        provider = Provider(dist_name, _distribution_version(dist_name))
        _register_plugin(loaded, ep.name, provider, None, ep, strict)
    if not builtin_found:
        # Running from a source tree whose metadata lacks the entry point: register directly.
        import importlib

        provider = Provider(BUILTIN_DISTRIBUTION, _distribution_version(BUILTIN_DISTRIBUTION))
        _register_plugin(loaded, "builtin", provider, importlib.import_module(BUILTIN_MODULE), None, strict)
    manager.check_pending()
    return loaded


def register_plugin(loaded: LoadedPlugins, plugin: object, name: str | None = None, strict: bool = True) -> None:
    """Register a plugin object by hand (Python composition, tests)."""
    module = getattr(plugin, "__module__", None) or getattr(plugin, "__name__", "local")
    provider = Provider(str(module).split(".")[0])
    _register_plugin(loaded, name or str(module), provider, plugin, None, strict)
    loaded.manager.check_pending()


_default: LoadedPlugins | None = None
_lock = threading.Lock()


def default_plugins() -> LoadedPlugins:
    """The process-wide plugins, loaded once on first use."""
    global _default
    with _lock:
        if _default is None:
            _default = load_registry()
        return _default


def default_registry() -> Registry:
    """The process-wide registry (see :func:`default_plugins`)."""
    return default_plugins().registry


def reset_default() -> None:
    """Forget the process-wide registry (tests, or after installing a plugin)."""
    global _default
    with _lock:
        _default = None
