"""Every built-in component passes the conformance kit (selfsup.testing), found in the live registry.

A new built-in is checked automatically. A component that needs arguments the kit cannot
guess declares them in a ``conformance_params`` class attribute (see selfsup.testing).
"""

from __future__ import annotations

import pytest

from selfsup.kinds import PART_KINDS
from selfsup.plugin_manager import load_registry
from selfsup.testing import CHECKED_KINDS, check_component

LOADED = load_registry(autoload=False)
BUILTINS = LOADED.registry
CHECKED = [(e.kind, e.name) for e in BUILTINS.list() if e.kind in CHECKED_KINDS and e.provider.package == "selfsup"]


def test_builtins_loaded():
    assert [str(f) for f in LOADED.failures] == []


def test_every_part_kind_has_a_check():
    assert set(PART_KINDS) <= set(CHECKED_KINDS)


def test_the_kit_found_the_builtins():
    kinds = {kind for kind, _ in CHECKED}
    assert {"encoder", "critic", "estimator", "sampler", "objective", "transform"} <= kinds
    assert ("objective", "moco") in CHECKED and ("estimator", "infonce") in CHECKED


@pytest.mark.parametrize(("kind", "name"), CHECKED, ids=[f"{k}/{n}" for k, n in CHECKED])
def test_builtin_passes_conformance(kind, name):
    result = check_component(BUILTINS, kind, name)
    if result.status == "skip":
        pytest.skip(result.detail)
    assert result.status == "pass", f"{kind} {name!r}: {result.detail}"
