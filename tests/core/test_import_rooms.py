"""Each room imports only what its row of the house map allows (DESIGN section 9): parts
import leaves and interfaces, never the engine, the plugin manager or plotting; running
`selfsup train` loads no benchmark."""

from __future__ import annotations

import subprocess
import sys

import pytest

# (tqdm is not listed: torch itself imports it)
HEAVY = ("matplotlib", "pluggy", "omegaconf", "sklearn", "selfsup.engine", "selfsup.plugin_manager", "selfsup.config")


def modules_after(statement: str) -> set[str]:
    """The modules in sys.modules after ``statement`` runs in a fresh interpreter."""
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize("module", [
    "selfsup.interfaces", "selfsup.errors", "selfsup.distributed",
    "selfsup.plugins.common.samplers", "selfsup.plugins.common.critics", "selfsup.plugins.common.estimators",
    "selfsup.plugins.moco.base", "selfsup.plugins.diagnostics",
])
def test_leaves_and_parts_import_nothing_heavy(module):
    loaded = modules_after(f"import {module}")
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert not heavy, f"importing {module} loads {heavy}"


def test_selfsup_train_loads_no_benchmark_module():
    loaded = modules_after("import selfsup.cli, selfsup.engine, selfsup.console\n"
                           "from selfsup.plugin_manager import default_registry\ndefault_registry()")
    assert "selfsup.engine.trainer" in loaded  # what train needs is there ...
    # the bench package registers its commands; their modules load only when one runs
    benchmarks = sorted(m for m in loaded if m.startswith("selfsup.plugins.bench."))
    assert "selfsup.plugins.bench" in loaded and not benchmarks, benchmarks
