"""Hook specifications for selfsup plugins.

A plugin is a module (or object) that implements some of these hooks, marked with
``selfsup.hookimpl``, and is announced in the ``selfsup.plugins`` entry-point group::

    [project.entry-points."selfsup.plugins"]
    my_plugin = "my_package.selfsup_plugin"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .registry import Registry

PROJECT_NAME = "selfsup"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec(historic=True)
def selfsup_register(registry: "Registry") -> None:
    """Register this plugin's components: ``registry.register(kind, name, factory)``.

    Historic: a plugin registered after the first call is called too. Raising here (for
    example on a duplicate name) rejects the whole plugin; its partial entries are removed.
    """
