"""Where and how a run computes: device, autocast precision, compilation, memory format."""

from __future__ import annotations

import os
import shutil
from typing import Any

import torch

from ..errors import ConfigError
from ..interfaces import Encoder


def select_device(name: str) -> torch.device:
    """``trainer.device``: ``auto`` (CUDA when there is a GPU, else CPU), ``cpu``, ``cuda`` /
    ``cuda:N`` or ``mps``; a device this machine does not have is a :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"trainer.device: {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            raise ConfigError(f"trainer.device: {name!r}, but this machine has {count} CUDA GPU(s); use "
                              "trainer.device=auto or cpu.")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"trainer.device: {name!r}, but MPS is not available here; use trainer.device=auto or cpu.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"trainer.device: {name!r} is not supported; use auto, cpu, cuda, cuda:N or mps.")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (``auto``: bf16 or fp16 on CUDA, fp32 on CPU)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def compile_encoders(objective: torch.nn.Module) -> list[str]:
    """``torch.compile`` each :class:`Encoder` sub-module of ``objective`` in place; their names.

    ``nn.Module.compile`` keeps the module (and its state-dict keys) as it is, so checkpoints
    and the encoder export are the same with or without compilation. Nested encoders inside
    a compiled one are left to it.
    """
    compiled: list[str] = []
    for name, module in objective.named_modules():
        if isinstance(module, Encoder) and not any(name.startswith(done + ".") for done in compiled):
            module.compile()
            compiled.append(name)
    return compiled


def check_compiler(device: torch.device) -> None:
    """``torch.compile`` on the CPU generates C++: fail before training, not inside inductor."""
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c):
        raise ConfigError(
            "trainer.compile: torch.compile on the CPU needs a C++ compiler (g++, c++ or clang++ on PATH, "
            "or CXX set), and none was found. Install one or set trainer.compile=false."
        )


def to_channels_last(x: Any) -> Any:
    """Image batches ``[N, C, H, W]`` in channels-last order; anything else (multimodal mappings) as it is."""
    return x.contiguous(memory_format=torch.channels_last) if torch.is_tensor(x) and x.dim() == 4 else x
