"""Jit-only Triton kernel files; launched by the wrappers in ``poodle_vllm.ops.triton``.

NOTE: ``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel file is imported, so CPU
tests must set it before the first import of anything under this package.
"""
