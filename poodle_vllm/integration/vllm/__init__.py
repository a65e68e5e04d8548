"""integration/vllm."""
