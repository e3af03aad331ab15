"""Timing plumbing of the benchmarks: wall-clock seconds that wait for the device, calls timed
one by one or in rotating rounds, medians with quartiles, peak memory.

On a GPU a call only queues kernels, so every clock reading here first waits for ``device``
(``torch.cuda.synchronize``); on the CPU that wait is a no-op.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch

CPU = torch.device("cpu")


def synchronize(device: torch.device = CPU) -> None:
    """Wait until the work queued on ``device`` is done (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Seconds since it was made (or last restarted), read after the device's queued work is done."""

    def __init__(self, device: torch.device = CPU) -> None:
        self.device = device
        self.restart()

    def restart(self) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    @property
    def seconds(self) -> float:
        synchronize(self.device)
        return time.perf_counter() - self._start


def seconds_per_call(fn: Callable[[], object], calls: int, device: torch.device = CPU) -> list[float]:
    """Seconds of each of ``calls`` consecutive calls of ``fn`` ``[calls]``."""
    times = []
    for _ in range(calls):
        clock = Stopwatch(device)
        fn()
        times.append(clock.seconds)
    return times


def rotating_rounds(members: Mapping[str, Callable[[], object]], rounds: int,
                    device: torch.device = CPU) -> dict[str, list[float]]:
    """``rounds`` rounds of one call of every member, back to back; member -> seconds per round ``[rounds]``.

    Round ``i`` starts at member ``i mod len(members)`` (rotating order), so a load that
    drifts during a round does not always fall on the same member, and the members of one
    round see nearly the same load: compare them round by round (ratios), not across rounds.
    """
    times: dict[str, list[float]] = {name: [] for name in members}
    order = list(members)
    for i in range(rounds):
        shift = i % len(order)
        for name in order[shift:] + order[:shift]:
            times[name] += seconds_per_call(members[name], 1, device)
    return times


def median_and_quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, lower quartile, upper quartile) of ``values``; the quartiles are order statistics."""
    ordered = sorted(values)
    return statistics.median(ordered), ordered[len(ordered) // 4], ordered[(3 * len(ordered)) // 4]


def reset_peak_memory(device: torch.device) -> None:
    """Start :func:`peak_memory_mib`'s count afresh (GPU; the CPU's process peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """Peak GPU memory allocated by torch, or on the CPU the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
