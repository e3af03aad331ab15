"""``selfsup new-plugin NAME``: write a working plugin package skeleton.

The skeleton is a complete, installable project: ``pyproject.toml`` announcing the plugin in
the ``selfsup.plugins`` entry-point group, an example critic (negative squared Euclidean
distance) in a module of its own, the ``plugin`` module whose ``selfsup_register`` hook
registers it (one line per component, as selfsup's own packages do), and tests that run it through the
conformance kit (:mod:`selfsup.testing`) and check it against a hand computation.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from .errors import SelfsupError

_DISTRIBUTION_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A selfsup plugin"
requires-python = ">=3.10"
dependencies = ["selfsup>=0.1"]

# selfsup finds the plugin through this entry-point group; nothing else links the two.
[project.entry-points."selfsup.plugins"]
{module} = "{module}.plugin"

[tool.setuptools]
packages = ["{module}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
'''

README = '''\
# {dist}

A selfsup plugin. It registers the critic `{component}` (negative squared
Euclidean distance over a temperature).

```bash
pip install -e .                     # selfsup finds the plugin through its entry point
selfsup plugins list critic          # {component} ... [{dist} 0.1.0]
selfsup plugins check {dist}         # the conformance kit on this package's components
pytest                               # this package's own tests
```

Use it in a pipeline: `critic: {{name: {component}, temperature: 0.5}}`. Add a component in a
module of its own and one `registry.register(...)` line in `{module}/plugin.py`; kinds and
their interfaces are listed by `selfsup plugins list`.
'''

INIT = '''\
"""{dist}: a selfsup plugin (loaded by selfsup through the ``selfsup.plugins`` entry point)."""

__version__ = "0.1.0"
'''

CRITIC = '''\
"""The component of {dist}: a critic, negative squared Euclidean distance over a temperature."""

from __future__ import annotations

from torch import Tensor

from selfsup import Critic


class NegativeSquaredDistance(Critic):
    """Negative squared Euclidean distance over a temperature: ``-|q - k|^2 / T``.

    temperature: T > 0. Higher scores mean closer (more similar) pairs.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {{temperature}}")
        self.temperature = float(temperature)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        """query ``[N, D]``, keys ``[M, D]`` -> ``[N, M]``: ``(2 q.k - |q|^2 - |k|^2) / T``."""
        cross = 2.0 * query @ keys.T  # [N, M]
        return (cross - query.pow(2).sum(1, keepdim=True) - keys.pow(2).sum(1)) / self.temperature

    def pair(self, query: Tensor, key: Tensor) -> Tensor:
        """Aligned pairs ``[N, D] x [N, D]`` -> ``[N]``."""
        return -(query - key).pow(2).sum(1) / self.temperature
'''

PLUGIN = '''\
"""The selfsup plugin of {dist}: the hook that registers each component, one line each."""

from __future__ import annotations

from selfsup import hookimpl
from selfsup.registry import Registry

from .critic import NegativeSquaredDistance


@hookimpl
def selfsup_register(registry: Registry) -> None:
    """Register this package's components (a taken name is an error, never an overwrite)."""
    registry.register("critic", "{component}", NegativeSquaredDistance)
'''

TEST = '''\
"""{dist}'s tests: a hand computation and selfsup's conformance kit."""

import pytest
import torch

from selfsup.testing import check_component, check_critic, plugin_registry

from {module} import plugin
from {module}.critic import NegativeSquaredDistance


def test_hand_computation():
    query = torch.tensor([[1.0, 0.0]])
    keys = torch.tensor([[0.0, 1.0], [1.0, 0.0], [3.0, 0.0]])
    # |q - k|^2 = 2, 0, 4; divided by T = 0.5 and negated
    assert NegativeSquaredDistance(0.5)(query, keys).tolist() == [[-4.0, 0.0, -8.0]]


def test_rejects_a_bad_temperature():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        NegativeSquaredDistance(0.0)


def test_passes_the_conformance_kit():
    check_critic(NegativeSquaredDistance(temperature=0.5))


def test_registered_component_passes_through_the_registry():
    registry = plugin_registry(plugin)  # selfsup's built-ins plus this plugin, no install needed
    result = check_component(registry, "critic", "{component}")
    assert result.passed, result.detail
'''


def plugin_names(name: str) -> tuple[str, str, str]:
    """(distribution name, import name, example component name) for ``name``."""
    if not _DISTRIBUTION_NAME.match(name):
        raise SelfsupError(
            f"plugin name {name!r} is not a valid package name: use letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit (e.g. selfsup-my-critic)."
        )
    module = re.sub(r"[-.]+", "_", name).lower()
    if not module.isidentifier() or keyword.iskeyword(module) or module[0].isdigit():
        raise SelfsupError(f"plugin name {name!r} gives the import name {module!r}, which is not a Python identifier.")
    if module in ("selfsup", "torch", "test", "tests"):
        raise SelfsupError(f"plugin name {name!r} would shadow the package {module!r}; pick another name.")
    component = module.removeprefix("selfsup_") + "_neg_l2"
    return name, module, component


def write_plugin_skeleton(name: str, directory: str | Path = ".") -> Path:
    """Write the skeleton of plugin package ``name`` into ``directory/name``; returns that folder."""
    dist, module, component = plugin_names(name)
    root = Path(directory) / dist
    if root.exists() and any(root.iterdir()):
        raise SelfsupError(f"{root} already exists and is not empty; choose another --dir or name.")
    fields = {"dist": dist, "module": module, "component": component}
    files = {
        root / "pyproject.toml": PYPROJECT,
        root / "README.md": README,
        root / module / "__init__.py": INIT,
        root / module / "critic.py": CRITIC,
        root / module / "plugin.py": PLUGIN,
        root / "tests" / f"test_{module}.py": TEST,
    }
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**fields))
    return root
