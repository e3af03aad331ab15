"""Plugins load through the entry-point group; broken ones are reported, not fatal."""

from importlib import metadata

import pytest
from support import FakeEntryPoint, plugin_module

import selfsup.plugin_manager as pm
from selfsup.errors import PluginError


def test_builtins_come_through_the_entry_point_group():
    eps = [ep for ep in metadata.entry_points(group="selfsup.plugins") if ep.dist and ep.dist.name == "selfsup"]
    assert [ep.value for ep in eps] == ["selfsup.plugins.plugin"]
    loaded = pm.load_registry(autoload=False)
    entry = loaded.registry.get("objective", "moco")
    assert entry.provider.package == "selfsup" and entry.provider.version == metadata.version("selfsup")
    assert loaded.failures == []


def good_register(registry):
    from selfsup.plugins.common.critics import DotCritic

    class ThirdPartyCritic(DotCritic):
        """A third party's critic."""

    registry.register("critic", "third_party", ThirdPartyCritic)


def with_fake_entry_points(monkeypatch, *fakes):
    real = pm._entry_points()
    monkeypatch.setattr(pm, "_entry_points", lambda: real + list(fakes))


def test_import_error_is_reported_and_others_still_load(monkeypatch):
    with_fake_entry_points(
        monkeypatch,
        FakeEntryPoint("broken", error=ImportError("No module named 'missing_dependency'")),
        FakeEntryPoint("good", plugin_module("good", good_register)),
    )
    loaded = pm.load_registry()
    assert ("critic", "third_party") in loaded.registry
    assert ("objective", "moco") in loaded.registry
    (failure,) = loaded.failures
    assert failure.plugin == "broken" and "missing_dependency" in str(failure)
    assert "selfsup-fake" in str(failure)


def test_wrong_hook_signature_is_reported(monkeypatch):
    def selfsup_register(registry, extra_argument):  # not in the hookspec
        pass

    with_fake_entry_points(monkeypatch, FakeEntryPoint("badsig", plugin_module("badsig", selfsup_register)))
    loaded = pm.load_registry()
    (failure,) = loaded.failures
    assert failure.plugin == "badsig" and "extra_argument" in failure.reason


def test_duplicate_name_rejects_the_whole_plugin(monkeypatch):
    def register(registry):
        from selfsup.plugins.common.critics import DotCritic

        registry.register("critic", "fresh_name", DotCritic)
        registry.register("critic", "dot", DotCritic)  # taken by selfsup

    with_fake_entry_points(monkeypatch, FakeEntryPoint("dup", plugin_module("dup", register)))
    loaded = pm.load_registry()
    (failure,) = loaded.failures
    assert "duplicate critic name 'dot'" in failure.reason
    assert ("critic", "fresh_name") not in loaded.registry  # rolled back
    assert loaded.registry.get("critic", "dot").provider.package == "selfsup"


def test_strict_mode_raises(monkeypatch):
    with_fake_entry_points(monkeypatch, FakeEntryPoint("broken", error=ImportError("boom")))
    with pytest.raises(PluginError, match="plugin 'broken'.*boom"):
        pm.load_registry(strict=True)


def test_autoload_switch_skips_third_party(monkeypatch):
    with_fake_entry_points(monkeypatch, FakeEntryPoint("good", plugin_module("good", good_register)))
    monkeypatch.setenv(pm.AUTOLOAD_ENV, "1")
    loaded = pm.load_registry()
    assert ("critic", "third_party") not in loaded.registry
    assert ("objective", "moco") in loaded.registry
    monkeypatch.setenv(pm.AUTOLOAD_ENV, "0")
    assert ("critic", "third_party") in pm.load_registry().registry


def test_register_plugin_by_hand_calls_historic_hook():
    loaded = pm.load_registry(autoload=False)
    pm.register_plugin(loaded, plugin_module("by_hand", good_register), name="by_hand")
    assert ("critic", "third_party") in loaded.registry
