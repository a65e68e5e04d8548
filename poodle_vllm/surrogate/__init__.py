"""The surrogate at serving time: batched runtime, router, monitor.

``runtime`` holds :class:`SurrogateModel` (a trained surrogate loaded once; torch is imported
only when one is loaded) and :class:`BatchingPredictor` (dynamic batching on a background thread).
"""

from poodle_vllm.surrogate.runtime import (
    BatchingPredictor,
    Prediction,
    RuntimeStats,
    SurrogateModel,
    encode_texts,
)

__all__ = ["BatchingPredictor", "Prediction", "RuntimeStats", "SurrogateModel", "encode_texts"]
