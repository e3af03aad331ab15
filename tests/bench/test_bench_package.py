"""The benchmarks package: its registrations, its shared timing plumbing, and its use of the
engine's public API only (DESIGN.md section 9: no code outside the engine touches a private
``Trainer`` member or moves the trainer's counters)."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest
import torch

from selfsup.plugins.bench import timing

BENCH = Path(__file__).resolve().parents[2] / "plugins" / "bench"
PRIVATE_USE = re.compile(r"trainer\._|global_step\s*\+=|\.epoch\s*\+=")


def test_bench_package_uses_the_trainers_public_api_only():
    sources = sorted(BENCH.rglob("*.py"))
    assert {"step.py", "mi.py", "timing.py"} <= {p.name for p in sources}
    found = [f"{path.relative_to(BENCH.parent)}:{number}: {line.strip()}"
             for path in sources for number, line in enumerate(path.read_text().splitlines(), 1)
             if PRIVATE_USE.search(line)]
    assert not found, "private Trainer use or counter writes in plugins/bench:\n" + "\n".join(found)


def test_benchmarks_are_registered_from_the_bench_package(registry):
    assert sorted(registry.names("benchmark")) == ["angular", "loader", "mi", "step"]
    for name in ("step", "mi", "angular", "loader"):
        assert registry.get("benchmark", name).target == f"selfsup.plugins.bench:run_{name}"


def test_rotating_rounds_start_each_round_one_member_later():
    calls: list[str] = []
    members = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = timing.rotating_rounds(members, rounds=4, device=torch.device("cpu"))
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert {name: len(t) for name, t in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(s >= 0 for t in times.values() for s in t)


def test_median_and_quartiles_are_order_statistics():
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 8.0, 7.0, 6.0]
    assert timing.median_and_quartiles(values) == (statistics.median(values), 3.0, 7.0)
    assert timing.median_and_quartiles([2.0]) == (2.0, 2.0, 2.0)


def test_seconds_per_call_times_each_call():
    clock = timing.Stopwatch()
    times = timing.seconds_per_call(lambda: sum(range(1000)), calls=3)
    assert len(times) == 3 and all(t >= 0 for t in times)
    assert sum(times) <= clock.seconds
    assert timing.peak_memory_mib(torch.device("cpu")) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_stopwatch_waits_for_the_gpu():
    device = torch.device("cuda")
    x = torch.randn(2048, 2048, device=device)
    timing.reset_peak_memory(device)
    times = timing.seconds_per_call(lambda: x @ x, calls=2, device=device)
    assert all(t > 0 for t in times)
    assert timing.peak_memory_mib(device) >= 2 * 2048 * 2048 * 4 / 2**20
