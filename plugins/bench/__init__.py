"""The benchmarks: ``selfsup bench step`` (images/s and what the framework costs beyond the
networks), ``selfsup bench mi`` (MI estimators against a known answer), ``selfsup bench
angular`` (margin objectives on multimodal digits) and ``selfsup bench loader`` (training
from a folder of JPEGs, in memory vs streamed). They import bundles and the engine's
public API; no bundle imports them, and registering them imports none of their modules
(``selfsup train`` never loads a benchmark). ``timing`` holds the clock plumbing they share.
"""

from __future__ import annotations

from selfsup.registry import Registry


def run_step(argv: list[str]) -> int:
    """images/s, per-phase breakdown and step/floor ratio of a pipeline."""
    from .step import main

    return main(argv)


def run_mi(argv: list[str]) -> int:
    """Known-answer MI benchmark on correlated Gaussians: estimate vs truth per estimator and critic."""
    from .mi import main

    return main(argv)


def run_angular(argv: list[str]) -> int:
    """Angular-margin objectives and the pairwise baseline on multi-view digits: accuracy, angles, cost."""
    from .angular import main

    return main(argv)


def run_loader(argv: list[str]) -> int:
    """Training from a generated folder of JPEGs, decoded into memory vs streamed: images/s and resident memory."""
    from .loader import main

    return main(argv)


def register(registry: Registry) -> None:
    registry.register("benchmark", "step", run_step)
    registry.register("benchmark", "mi", run_mi)
    registry.register("benchmark", "angular", run_angular)
    registry.register("benchmark", "loader", run_loader)
