"""Named phases of a training step, timed only while a :class:`StepProfiler` is active.

Bundles and the engine wrap their work in ``with phase("key_encoder"):``. Outside a profiler
this costs one global lookup; inside, each phase is timed (CUDA synchronised at its edges)
and also labelled for ``torch.profiler`` traces.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch

_active: "StepProfiler | None" = None


class StepProfiler:
    """Accumulates wall time per phase name over the steps run inside ``with profiler:``.

    Nested phases are timed on their own and also count toward their parent; the report
    lists them with their parent as ``parent/child``.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[str] = []

    def __enter__(self) -> "StepProfiler":
        global _active
        _active = self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        _active = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def time(self, name: str) -> Iterator[None]:
        key = "/".join([*self._stack, name])
        self._stack.append(name)
        self._sync()
        start = time.perf_counter()
        try:
            with torch.profiler.record_function(f"selfsup::{key}"):
                yield
        finally:
            self._sync()
            self.seconds[key] += time.perf_counter() - start
            self._stack.pop()


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the enclosed work as ``name`` when a :class:`StepProfiler` is active."""
    profiler = _active
    if profiler is None:
        yield
        return
    with profiler.time(name):
        yield
