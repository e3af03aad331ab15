"""One table of kinds: the registry, the pipeline builder, `plugins show` and the conformance
kit all read selfsup.kinds.KINDS."""

from __future__ import annotations

from selfsup.config import part_kind
from selfsup.kinds import CHECKED_KINDS, KINDS, PART_KINDS
from selfsup.cli import main
from selfsup.registry import Registry
from selfsup.testing import check_component


def test_every_reader_takes_its_kinds_from_the_table(registry):
    assert Registry().kinds == list(KINDS)
    assert {kind: (registry.list(kind) and True) for kind in KINDS} == {kind: True for kind in KINDS}
    for kind, interface in PART_KINDS.items():  # a parameter annotated with the interface is a nested part
        assert part_kind(interface) == kind and part_kind(interface | None) == kind
    assert part_kind(KINDS["logger"].interface) is None  # loggers are listed in trainer.loggers, not nested
    assert set(CHECKED_KINDS) == {k for k, kind in KINDS.items() if kind.check is not None}


def test_traits_are_class_attributes_of_the_interface_and_shown_by_the_cli(capsys):
    for kind in KINDS.values():
        for trait in kind.traits:
            assert kind.interface is not None and hasattr(kind.interface, trait), (kind.name, trait)
    assert main(["plugins", "show", "estimator", "infonce"]) == 0
    assert "needs_negatives=True, is_lower_bound=True" in capsys.readouterr().out


def test_every_checked_kind_runs_its_check_on_a_builtin(registry):
    for kind in CHECKED_KINDS:
        name = registry.names(kind)[0]
        result = check_component(registry, kind, name)
        assert result.status in ("pass", "skip"), (kind, name, result.detail)
