"""Plugin tooling at the command line: broken plugins, strictness, check, show, new-plugin."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
from plugin_install import activate, pip_install_target
from support import FakeEntryPoint, plugin_module

import selfsup.plugin_manager as pm
from selfsup.cli import main


# --------------------------------------------------------------------------- fake plugins
def register_good(registry):
    from selfsup.plugins.common.critics import DotCritic

    class HalfDot(DotCritic):
        """Dot product over 2 (a third party's critic)."""

        def __init__(self) -> None:
            super().__init__(temperature=2.0)

    registry.register("critic", "fake_half_dot", HalfDot)


def register_wrong_signature(registry, extra_argument):  # not the hookspec's signature
    pass


def register_duplicate(registry):
    from selfsup.plugins.common.critics import DotCritic

    registry.register("critic", "fake_fresh", DotCritic)
    registry.register("critic", "dot", DotCritic)  # taken by selfsup


BROKEN = {
    "import_error": (FakeEntryPoint("broken", error=ImportError("No module named 'missing_dependency'")),
                     "plugin 'broken' from selfsup-fake: ImportError: No module named 'missing_dependency'"),
    "wrong_signature": (FakeEntryPoint("badsig", plugin_module("badsig", register_wrong_signature)),
                        "plugin 'badsig' from selfsup-fake: PluginValidationError: Plugin 'badsig' for hook "
                        "'selfsup_register'; hookimpl definition: register_wrong_signature(registry, extra_argument);"
                        " Argument(s) {'extra_argument'} are declared in the hookimpl but can not be found in the "
                        "hookspec"),
    "duplicate_name": (FakeEntryPoint("dup", plugin_module("dup", register_duplicate)),
                       "plugin 'dup' from selfsup-fake: RegistryError: duplicate critic name 'dot': already "
                       "registered by selfsup 0.1.0 (selfsup.plugins.common.critics:DotCritic); selfsup-fake tried "
                       "to register selfsup.plugins.common.critics:DotCritic. Pick another name."),
}


@pytest.fixture
def fake_plugins(monkeypatch):
    """Install fake entry points next to the real ones; selfsup's cached registry is restored afterwards."""
    real = pm._entry_points()
    monkeypatch.setattr(pm, "_default", None)
    monkeypatch.delenv(pm.STRICT_ENV, raising=False)
    monkeypatch.delenv(pm.AUTOLOAD_ENV, raising=False)

    def install(*fakes):
        monkeypatch.setattr(pm, "_entry_points", lambda: real + list(fakes))

    return install


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_plugin_is_named_with_its_reason_and_the_others_load(case, fake_plugins, capsys):
    broken, message = BROKEN[case]
    fake_plugins(broken, FakeEntryPoint("good", plugin_module("good", register_good)))
    assert main(["plugins", "list", "critic"]) == 0
    out, err = capsys.readouterr()
    assert f"warning: {message} (its components are not loaded;" in err
    names = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert "fake_half_dot" in names and "dot" in names  # the good plugin and selfsup still load
    assert "fake_fresh" not in names  # the rejected plugin's partial entries were rolled back


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_strict_flag_makes_a_broken_plugin_an_error(case, fake_plugins, capsys):
    broken, message = BROKEN[case]
    fake_plugins(broken)
    assert main(["plugins", "list", "--strict"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_strict_environment_variable(fake_plugins, monkeypatch, capsys):
    fake_plugins(BROKEN["import_error"][0])
    monkeypatch.setenv(pm.STRICT_ENV, "1")
    assert main(["plugins", "show", "critic", "dot"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {BROKEN['import_error'][1]}"
    monkeypatch.setenv(pm.STRICT_ENV, "0")
    assert main(["plugins", "show", "critic", "dot"]) == 0


def test_train_names_the_broken_plugin(fake_plugins, tmp_path, capsys):
    fake_plugins(BROKEN["import_error"][0])
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"warning: {BROKEN['import_error'][1]}" in err and "does not exist" in err


def test_check_reports_broken_and_failing_plugins_in_a_table(fake_plugins, capsys):
    def register_bad_critic(registry):
        from selfsup.plugins.common.critics import DotCritic

        class SkewedPair(DotCritic):
            """Its pair() disagrees with forward()."""

            def pair(self, query, key):
                return super().pair(query, key) + 1.0

        registry.register("critic", "fake_skewed", SkewedPair)

    fake_plugins(BROKEN["import_error"][0], FakeEntryPoint("good", plugin_module("good", register_good)),
                 FakeEntryPoint("bad", plugin_module("bad", register_bad_critic)))
    assert main(["plugins", "check", "selfsup-fake"]) == 1
    lines = capsys.readouterr().out.splitlines()
    rows = {tuple(line.split()[:2]): line for line in lines[1:-1]}
    assert set(rows) == {("plugin", "broken"), ("critic", "fake_half_dot"), ("critic", "fake_skewed")}
    assert "FAIL" in rows[("plugin", "broken")] and "missing_dependency" in rows[("plugin", "broken")]
    assert rows[("critic", "fake_half_dot")].split()[3] == "pass"
    assert "FAIL" in rows[("critic", "fake_skewed")] and "pair disagrees" in rows[("critic", "fake_skewed")]
    assert lines[-1] == "1 passed, 2 failed, 0 skipped"


def test_check_of_a_package_that_passes_and_of_an_unknown_one(fake_plugins, capsys):
    fake_plugins(FakeEntryPoint("good", plugin_module("good", register_good)))
    assert main(["plugins", "check", "selfsup_fake"]) == 0  # names compare normalised
    assert capsys.readouterr().out.splitlines()[-1] == "1 passed, 0 failed, 0 skipped"
    assert main(["plugins", "check", "no-such-package"]) == 2
    assert "no components from a package named 'no-such-package'" in capsys.readouterr().err


def test_check_builtin_estimators(capsys):
    assert main(["plugins", "check", "selfsup", "--kind", "estimator"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:-1]]
    assert {r[1] for r in rows} >= {"infonce", "dv", "nwj", "jsd"} and all(r[4] == "pass" for r in rows)


def test_show_lists_types_defaults_traits_and_docstring(capsys):
    assert main(["plugins", "show", "objective", "moco"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("objective moco: MoCo: a query encoder")
    assert "provided by selfsup 0.1.0 (selfsup.plugins.moco.objective:MoCo)" in out
    assert "num_views=2, needs_labels=False" in out
    assert "encoder: Encoder (required)  (a registered encoder: {name: ..., parameters})" in out
    assert "critic: Critic | None = None" in out and "momentum: float = 0.99" in out
    assert "num_train: int = 0  (filled from the data)" in out
    assert "Defaults follow MoCo v2" in out  # the docstring beyond its summary


# --------------------------------------------------------------------------- new-plugin
def test_new_plugin_rejects_bad_names_and_existing_folders(tmp_path, capsys):
    assert main(["new-plugin", "my plugin!", "--dir", str(tmp_path)]) == 2
    assert "not a valid package name" in capsys.readouterr().err
    (tmp_path / "taken" / "file").parent.mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert main(["new-plugin", "taken", "--dir", str(tmp_path)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err


def load_test_module(path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("skeleton_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_new_plugin_skeleton_installs_and_its_component_shows_up(tmp_path, monkeypatch, request, capsys):
    assert main(["new-plugin", "selfsup-demo-critic", "--dir", str(tmp_path)]) == 0
    root = tmp_path / "selfsup-demo-critic"
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "README.md", "pyproject.toml", "selfsup_demo_critic/__init__.py", "selfsup_demo_critic/critic.py",
        "selfsup_demo_critic/plugin.py",
        "tests/test_selfsup_demo_critic.py",
    ]
    target = pip_install_target(root, tmp_path / "install")
    activate(monkeypatch, request, target, "selfsup_demo_critic")
    monkeypatch.delenv(pm.AUTOLOAD_ENV, raising=False)
    assert main(["plugins", "list", "critic"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["demo_critic_neg_l2"]]
    assert line.endswith("[selfsup-demo-critic 0.1.0]") and "Negative squared Euclidean distance" in line
    assert main(["plugins", "check", "selfsup-demo-critic"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 passed, 0 failed, 0 skipped"
    # the skeleton's own tests pass against the installed package
    tests = load_test_module(root / "tests" / "test_selfsup_demo_critic.py")
    for name in [n for n in dir(tests) if n.startswith("test_")]:
        getattr(tests, name)()
    sys.modules.pop("skeleton_tests", None)
