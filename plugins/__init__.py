"""selfsup's built-in plugin: every concrete part and bundle.

It registers through the ``selfsup.plugins`` entry-point group exactly as a third-party
package does (see pyproject.toml). Each subpackage exposes ``register(registry)``.
"""

from __future__ import annotations

from selfsup.hookspecs import hookimpl
from selfsup.registry import Registry


@hookimpl
def selfsup_register(registry: Registry) -> None:
    from . import common, data, encoders, moco
    from . import diagnostics, noncontrastive
    from . import dim
    from . import angular, multimodal
    from . import loggers
    from . import bench

    for subpackage in (common, data, encoders, moco, diagnostics, noncontrastive, dim, angular, multimodal, loggers, bench):
        subpackage.register(registry)
