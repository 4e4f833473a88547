"""Where and how the networks run: the torch device and whether bf16 pays on it. One rule for inference and for
every trainer."""
from __future__ import annotations

import os

import torch

from .errors import VCError


def fast_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 matrix work pays on `device`: a GPU with bf16, or a CPU with AVX-512 (where oneDNN has bf16
    kernels; about 4x fp32 on the machines this project is measured on). VC_BF16=0 or 1 overrides."""
    forced = os.environ.get("VC_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def resolve_device(device: str = "auto") -> torch.device:
    """"auto": the GPU where there is one, else the CPU; otherwise the named torch device, checked."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except RuntimeError:
        raise VCError(f"unknown device '{device}' (e.g. cpu, cuda, cuda:1, auto)") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise VCError(f"device '{device}': no CUDA GPU is available to this process")
    return d
