"""Session-wide test settings."""

from __future__ import annotations

import os

# Triton decides between compiled and interpreted kernels when it is first imported (vLLM
# imports it too), so interpret mode must be chosen before anything imports it. Without a GPU
# the kernel tests always run interpreted, in process.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
