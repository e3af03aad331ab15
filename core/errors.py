"""Errors a user can cause and fix. The CLI prints these as one paragraph, never a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SelfsupError(Exception):
    """Base class for every error caused by a user's config, data or plugin."""


class ConfigError(SelfsupError):
    """A pipeline file or override is wrong. The message names the full key path."""


class RegistryError(SelfsupError):
    """A registry lookup or registration failed (unknown or duplicate name)."""


class DataError(SelfsupError):
    """A data file is missing or holds arrays of the wrong shape or type."""


class PluginError(SelfsupError):
    """A third-party plugin could not be loaded."""


class TrainingDiverged(SelfsupError):
    """The loss became NaN or infinite."""


class CollapseDetected(SelfsupError):
    """The collapse monitor stopped a run whose embeddings collapsed (``monitor.stop_on_collapse``)."""


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` candidates that look like ``word`` (for 'did you mean' hints)."""
    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.5)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' Did you mean 'x'?' when a close match exists, else an empty string."""
    matches = close_matches(word, candidates)
    if not matches:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"
