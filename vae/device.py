"""Pick the fastest device present: CUDA, then Apple's MPS, then the CPU."""
from __future__ import annotations

import functools

import torch

from .errors import ConfigError


def pick_device(requested: str = "auto") -> torch.device:
    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ConfigError(f"device={requested!r} is invalid: expected auto, cpu, cuda or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={requested!r} is not available on this machine")
    return device


@functools.lru_cache(maxsize=8)
def has_fast_bfloat16(device: torch.device | str = "cpu") -> bool:
    """Whether bfloat16 matmuls run natively here (and so about 2x faster than float32).

    CUDA: what torch reports (Ampere and later). CPU: the AVX512-BF16 or AMX-BF16 instruction
    sets, read from /proc/cpuinfo (Linux); elsewhere we do not know and say no, because an
    emulated bfloat16 matmul is several times *slower* than float32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
