"""Keep the memory of freed CPU tensors in the process instead of handing it back to the OS.

glibc's malloc serves a large block (above a threshold that adapts only up to 32 MiB) with
``mmap`` and unmaps it on ``free``, and trims the top of its heap once 128 KiB of it are free.
A training step on the CPU frees and allocates the same activations every step, so the
kernel maps and zeroes them again each time: thousands of page faults and kernel time in
every step (the README's performance section has the measured cost). With ``mmap`` off
and trimming raised to 2 GiB, freed blocks stay in the heap and the next step reuses them;
the price is that the process's resident memory stays near its peak (what PyTorch's CUDA
caching allocator does on a GPU).
"""

from __future__ import annotations

import ctypes
import platform
import sys

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: give back only a 2 GiB free top


def retain_freed_host_memory() -> bool:
    """Make glibc keep freed memory for reuse (no ``mmap`` per block, trim above 2 GiB).

    Returns whether the setting was applied: False off Linux or without glibc (musl,
    macOS, Windows), where nothing is changed. Process-wide and idempotent.
    """
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # large blocks then come from the heap (one too large for a thread's arena still falls back to mmap)
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
