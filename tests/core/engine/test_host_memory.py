"""retain_freed_host_memory: a freed large CPU tensor is reused without page faults."""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)

# a 64 MiB block is above glibc's largest adaptive mmap threshold (32 MiB): by default it is
# mapped on every allocation and its 16,384 pages fault again when written. Retained, the heap
# grows twice (a freed block can be a little short for the next aligned one), then is reused
_REALLOCATION_FAULTS = """
import resource, sys, torch
from selfsup.engine.host_memory import retain_freed_host_memory
applied = retain_freed_host_memory() if sys.argv[1] == "retain" else None
for _ in range(2):
    torch.ones(16 * 2**20).add_(1)  # allocate, write, free
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.ones(16 * 2**20).add_(1)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_of_five_reallocations(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _REALLOCATION_FAULTS, mode], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


def test_freed_block_is_reused_without_page_faults():
    applied, faults = _faults_of_five_reallocations("retain")
    assert applied == "True"
    # at most the heap's second growth (16,384 pages); the other blocks came back from the heap
    assert faults < 18_000


def test_default_allocator_faults_the_block_again():
    """The control: without the setting the same block costs a fault per page."""
    _, faults = _faults_of_five_reallocations("default")
    assert faults > 5 * 15_000


@pytest.mark.parametrize("retain", [True, False])
def test_trainer_applies_the_setting_on_the_cpu_unless_switched_off(tmp_path, registry, monkeypatch, retain):
    from omegaconf import OmegaConf

    from selfsup.engine import build_trainer, trainer as trainer_module
    from support import tiny_pipeline

    calls = []
    monkeypatch.setattr(trainer_module, "retain_freed_host_memory", lambda: calls.append(1) or True)
    cfg = tiny_pipeline(tmp_path, trainer__device="cpu", trainer__retain_host_memory=retain)
    build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run")
    assert len(calls) == int(retain)
