"""Poodle: just-in-time model replacement (JITR) for vLLM.

Importing this package is cheap and imports neither torch nor vllm; the vLLM glue lives in
``poodle_vllm.integration.vllm`` and is loaded by vLLM's plugin entry points.
"""

__version__ = "0.1.0"
