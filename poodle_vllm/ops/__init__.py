"""Fused ops for the surrogate runtime and model search.

``reference`` holds pure-torch versions; ``triton/`` holds the kernels and wrappers
(the only place in Poodle that imports triton); ``dispatch`` picks between them.
Callers use ``from poodle_vllm.ops import dispatch`` and call ``dispatch.pool_classify``
etc.  Importing this package imports nothing heavy.
"""
