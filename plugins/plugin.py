"""The hook behind the ``selfsup.plugins`` entry point: each subpackage registers its parts."""

from __future__ import annotations

from selfsup.hookspecs import hookimpl
from selfsup.registry import Registry


@hookimpl
def selfsup_register(registry: Registry) -> None:
    from . import angular, bench, common, data, diagnostics, dim, encoders, loggers, moco, multimodal, noncontrastive

    for subpackage in (common, data, encoders, moco, diagnostics, noncontrastive, dim, angular, multimodal, loggers,
                       bench):
        subpackage.register(registry)
