"""The registry: kind -> name -> factory, in one obvious place.

Lookup is a dict. An unknown name raises :class:`RegistryError` listing close matches; a
duplicate name raises too, it never overwrites. Plugins add entries through the
``selfsup_register(registry)`` hook (see :mod:`selfsup.plugin_manager`).
"""

from __future__ import annotations

import builtins
import contextlib
import fnmatch
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import RegistryError, did_you_mean
from .kinds import KINDS

#: The kinds a registry knows, with their summaries (``Registry(kinds=...)`` replaces them).
DEFAULT_KINDS: dict[str, str] = {name: kind.summary for name, kind in KINDS.items()}


@dataclass(frozen=True)
class Provider:
    """The distribution that registered an entry."""

    package: str
    version: str = ""

    def __str__(self) -> str:
        return f"{self.package} {self.version}".strip()


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    summary: str
    provider: Provider

    @property
    def target(self) -> str:
        """``module:qualname`` of the factory, as written in ``registry.yaml``."""
        return f"{self.factory.__module__}:{self.factory.__qualname__}"


def first_docstring_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


class Registry:
    """Kinds -> names -> :class:`Entry`."""

    def __init__(self, kinds: dict[str, str] | None = None) -> None:
        self._kinds: dict[str, str] = dict(DEFAULT_KINDS if kinds is None else kinds)
        self._entries: dict[str, dict[str, Entry]] = {k: {} for k in self._kinds}
        self._provider = Provider("local")

    # ------------------------------------------------------------------ kinds
    @property
    def kinds(self) -> list[str]:
        return list(self._kinds)

    def _check_kind(self, kind: str) -> dict[str, Entry]:
        if kind not in self._entries:
            raise RegistryError(
                f"unknown component kind {kind!r}; known kinds: {', '.join(self._kinds)}."
                + did_you_mean(kind, self._kinds)
            )
        return self._entries[kind]

    # ------------------------------------------------------------------ registration
    @contextlib.contextmanager
    def providing(self, provider: Provider) -> Iterator[None]:
        """Attribute entries registered inside the block to ``provider``.

        If the block raises, every entry it registered is removed again, so a broken
        plugin never leaves half its components behind.
        """
        previous, self._provider = self._provider, provider
        before = {kind: set(names) for kind, names in self._entries.items()}
        try:
            yield
        except BaseException:
            for kind, names in self._entries.items():
                for name in set(names) - before.get(kind, set()):
                    del names[name]
            raise
        finally:
            self._provider = previous

    def register(
        self, kind: str, name: str, factory: Callable[..., Any], summary: str | None = None
    ) -> Entry:
        """Add ``factory`` as ``kind``/``name``. Raises if the name is taken."""
        entries = self._check_kind(kind)
        if name in entries:
            other = entries[name]
            raise RegistryError(
                f"duplicate {kind} name {name!r}: already registered by {other.provider} "
                f"({other.target}); {self._provider} tried to register {factory.__module__}:"
                f"{factory.__qualname__}. Pick another name."
            )
        entry = Entry(kind, name, factory, summary or first_docstring_line(factory), self._provider)
        entries[name] = entry
        return entry

    # ------------------------------------------------------------------ lookup
    def get(self, kind: str, name: str) -> Entry:
        entries = self._check_kind(kind)
        try:
            return entries[name]
        except KeyError:
            known = ", ".join(sorted(entries)) or "none"
            raise RegistryError(
                f"unknown {kind} {name!r}.{did_you_mean(name, entries)} Known {kind}s: {known}."
            ) from None

    def create(self, kind: str, name: str, **params: Any) -> Any:
        """Build ``kind``/``name`` with keyword parameters (no validation: see selfsup.config)."""
        return self.get(kind, name).factory(**params)

    def __contains__(self, key: tuple[str, str]) -> bool:
        kind, name = key
        return name in self._entries.get(kind, {})

    def list(self, kind: str | None = None, pattern: str = "*") -> builtins.list[Entry]:
        """Entries of ``kind`` (all kinds if None) whose name matches the wildcard ``pattern``."""
        kinds = [kind] if kind is not None else self.kinds
        out: builtins.list[Entry] = []
        for k in kinds:
            entries = self._check_kind(k)
            out.extend(e for n, e in sorted(entries.items()) if fnmatch.fnmatchcase(n, pattern))
        return out

    def names(self, kind: str) -> builtins.list[str]:
        return sorted(self._check_kind(kind))
