"""Small helpers shared by the Triton wrappers."""

from __future__ import annotations

from typing import Any

import torch


def is_interpreted(kernel: Any) -> bool:
    """True when ``kernel`` was decorated under ``TRITON_INTERPRET=1`` (runs on CPU tensors).

    NOTE: triton decides this once, when the kernel file is imported, so we ask the
    kernel object rather than the current environment.
    """
    return type(kernel).__name__ == "InterpretedFunction"


def check_launchable(kernel: Any, *tensors: torch.Tensor) -> None:
    """Raise unless all tensors share one device ``kernel`` can run on."""
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(map(str, devices))}")
    dev = next(iter(devices))
    if dev.type != "cuda" and not is_interpreted(kernel):
        raise RuntimeError(
            f"Triton kernels need CUDA tensors (got {dev}); set TRITON_INTERPRET=1 before importing "
            "poodle_vllm.ops.triton kernels to run them on CPU, or use the torch backend"
        )


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
