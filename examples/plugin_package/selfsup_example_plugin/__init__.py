"""selfsup-example-plugin: the SMILE MI estimator and a bundle using it, added to selfsup by entry point.

Nothing here is imported by selfsup itself; ``selfsup.plugin_manager`` loads
:mod:`selfsup_example_plugin.plugin` through the ``selfsup.plugins`` entry-point group.
"""

from __future__ import annotations

from .contrast import SmileContrast
from .smile import SMILE

__version__ = "0.1.0"
__all__ = ["SMILE", "SmileContrast"]
