"""Shared fixtures: the plugin registry, loaded once; thread count for the 2-core machine."""

from __future__ import annotations

import pytest
import torch

from selfsup.plugin_manager import load_registry


@pytest.fixture(scope="session")
def registry():
    """The registry with every installed plugin, loaded once for the session."""
    return load_registry().registry


@pytest.fixture(autouse=True)
def _few_threads():
    # 2-core machine: keep torch from oversubscribing when pytest runs in parallel
    torch.set_num_threads(2)
    yield


@pytest.fixture(autouse=True, scope="session")
def _decode_cache_in_tmp(tmp_path_factory):
    """Decoded image folders are cached under a session folder, not the user's ~/.cache."""
    import os

    before = os.environ.get("SELFSUP_CACHE")
    os.environ["SELFSUP_CACHE"] = str(tmp_path_factory.mktemp("selfsup-cache"))
    yield
    if before is None:
        os.environ.pop("SELFSUP_CACHE", None)
    else:
        os.environ["SELFSUP_CACHE"] = before
