"""selfsup-example-plugin: the SMILE MI estimator, a bundle using it and a metrics sink, added by entry point.

Nothing here is imported by selfsup itself; ``selfsup.plugin_manager`` loads
:mod:`selfsup_example_plugin.plugin` through the ``selfsup.plugins`` entry-point group.
"""

from __future__ import annotations

from .best_metrics import BestMetricsLogger
from .contrast import SmileContrast
from .smile import SMILE

__version__ = "0.1.0"
__all__ = ["SMILE", "BestMetricsLogger", "SmileContrast"]
