"""Triton kernels (``kernels/``) and their wrappers (one module per op).

Wrappers check inputs, allocate outputs and launch; they are reached through
``poodle_vllm.ops.dispatch``, which falls back to ``poodle_vllm.ops.reference``.
Importing this package does not import triton; the op modules do.
"""
