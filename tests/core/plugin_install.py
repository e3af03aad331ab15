"""Install a plugin package honestly (pip, into a temporary target) and make it visible to this process.

Used by the third-party plugin tests. The package is copied first, so pip's in-tree build
leaves no ``build/`` or ``*.egg-info`` in the repository.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import selfsup.plugin_manager as pm


def pip_install_target(source: Path, workdir: Path) -> Path:
    """``pip install --no-deps --no-build-isolation --target`` a copy of ``source``; returns the target."""
    copy = workdir / "src" / source.name
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    target = workdir / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "--target", str(target), str(copy)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, f"pip install failed:\n{done.stdout}\n{done.stderr}"
    return target


def activate(monkeypatch, request, target: Path, module: str) -> None:
    """Put ``target`` on sys.path (its dist-info and entry point become visible) for one test.

    monkeypatch restores sys.path and selfsup's cached registry afterwards; the package's
    modules are dropped from sys.modules, so later tests never see the plugin.
    """
    monkeypatch.syspath_prepend(str(target))  # also invalidates importlib's caches
    monkeypatch.setattr(pm, "_default", None)  # the process-wide registry is rebuilt, then restored

    def forget_modules() -> None:
        for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
            del sys.modules[name]
        importlib.invalidate_caches()

    request.addfinalizer(forget_modules)
