"""The surrogate at serving time: a loaded classifier and a dynamic batcher in front of it.

``SurrogateModel`` hides the Hugging Face model, the tokenizer, truncation and the calibrated
softmax: callers hand it texts and get :class:`Prediction` objects. ``BatchingPredictor`` turns
many concurrent single-text requests into a few batched forward passes (a background thread
waits up to ``window_ms`` for more texts, up to ``max_batch``), which is what makes a small
encoder cheap per request on a CPU.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One surrogate answer: the label, its calibrated probability and the full distribution."""

    label: str
    confidence: float
    probs: dict[str, float]
    truncated: bool = False
    """The input was longer than the surrogate's max_length and was cut."""


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
    """Token ids per text (special tokens included, truncated to ``max_length``) and truncation flags.

    Texts are tokenized with room for one extra token; only those that fill it (i.e. were really
    longer) are tokenized again at ``max_length``, so the flag is exact and the cost stays ~1x.
    """
    if not texts:
        return [], []
    probe = tokenizer(list(texts), truncation=True, max_length=max_length + 1)["input_ids"]
    truncated = [len(ids) > max_length for ids in probe]
    long_idx = [i for i, t in enumerate(truncated) if t]
    if long_idx:
        again = tokenizer([texts[i] for i in long_idx], truncation=True, max_length=max_length)["input_ids"]
        for i, ids in zip(long_idx, again, strict=False):
            probe[i] = ids
    return [list(ids) for ids in probe], truncated


def collate(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """Right-padded ``input_ids`` and ``attention_mask`` tensors for one batch."""
    import torch

    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    return input_ids, mask


def _fused_head(model: Any) -> tuple[Any, Any] | None:
    """``(weight, bias)`` of a mean-pooling classifier's head, which ``ops.pool_classify`` fuses
    with the pooling (a Triton kernel on a GPU, its torch reference elsewhere); None otherwise."""
    from poodle_vllm.train.heads import uses_mean_pooling

    if not uses_mean_pooling(model) or model.training:
        return None  # in training the head's dropout must run: use the module's own forward
    return model.classifier.weight, model.classifier.bias


def batched_logits(model: Any, encoded: Sequence[Sequence[int]], pad_id: int, batch_size: int) -> np.ndarray:
    """Logits for pre-tokenized inputs in original order; batches are built by length to cut padding."""
    import torch

    from poodle_vllm.ops import dispatch

    head = _fused_head(model)
    n = len(encoded)
    if n == 0:
        return np.zeros((0, int(model.config.num_labels)), dtype=np.float32)
    order = sorted(range(n), key=lambda i: len(encoded[i]))
    out = np.zeros((n, int(model.config.num_labels)), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            input_ids, mask = collate([encoded[i] for i in idx], pad_id)
            if head is not None:
                hidden = model.encode(input_ids, mask).last_hidden_state
                logits, _ = dispatch.pool_classify(hidden, mask, head[0], head[1])
            else:
                logits = model(input_ids=input_ids, attention_mask=mask).logits
            out[idx] = logits.float().cpu().numpy()
    return out


@dataclass
class RuntimeStats:
    """Counters a monitor or benchmark can read without touching the model."""

    texts: int = 0
    truncated: int = 0
    batches: int = 0
    predict_s: float = 0.0
    batch_sizes: dict[int, int] = field(default_factory=dict)


class SurrogateModel:
    """A trained surrogate loaded once for inference (thread-safe ``predict``)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        label_names: list[str],
        temperature: float = 1.0,
        max_length: int = 128,
        metadata: Any = None,
        path: Path | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.label_names = list(label_names)
        self.temperature = float(temperature)
        self.max_length = int(max_length)
        self.metadata = metadata
        self.path = path
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self.stats = RuntimeStats()
        # NOTE: torch modules are not safe to call from several threads at once with shared
        # intra-op pools; one lock keeps direct callers and the batcher from interleaving.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, num_threads: int | None = None) -> SurrogateModel:
        """Load a surrogate folder (HF model + tokenizer, ``poodle.json`` when present)."""
        import torch

        from poodle_vllm.train.artifact import METADATA_FILE, load_metadata
        from poodle_vllm.train.heads import load_classifier, load_tokenizer

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"surrogate folder {path} does not exist")
        if num_threads:
            torch.set_num_threads(num_threads)
        model = load_classifier(path)
        model.eval()
        tokenizer = load_tokenizer(path)
        if (path / METADATA_FILE).exists():
            meta = load_metadata(path)
            names, temperature, max_length = meta.label_names, meta.calibration_temperature, meta.max_length
        else:  # a plain HF classifier: trust its config
            meta = None
            id2label = model.config.id2label
            names = [str(id2label[i]) for i in range(model.config.num_labels)]
            temperature, max_length = 1.0, 128
        if len(names) != model.config.num_labels:
            raise ValueError(
                f"{path}: poodle.json lists {len(names)} labels but the model has {model.config.num_labels}"
            )
        return cls(model, tokenizer, names, temperature, max_length, meta, path)

    def predict_logits(self, texts: Sequence[str], batch_size: int = 32) -> tuple[np.ndarray, list[bool]]:
        """Raw (uncalibrated) logits and truncation flags."""
        encoded, truncated = encode_texts(self.tokenizer, texts, self.max_length)
        with self._lock:
            logits = batched_logits(self.model, encoded, self.pad_id, batch_size)
        return logits, truncated

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[Prediction]:
        """Calibrated predictions, one per text, in order."""
        from poodle_vllm.train.calibration import softmax

        t0 = time.perf_counter()
        logits, truncated = self.predict_logits(texts, batch_size)
        probs = softmax(logits, self.temperature)
        out = []
        for row, trunc in zip(probs, truncated, strict=False):
            k = int(row.argmax())
            out.append(
                Prediction(
                    label=self.label_names[k],
                    confidence=float(row[k]),
                    probs={name: float(p) for name, p in zip(self.label_names, row, strict=False)},
                    truncated=trunc,
                )
            )
        st = self.stats
        st.texts += len(texts)
        st.truncated += sum(truncated)
        st.batches += 1
        st.predict_s += time.perf_counter() - t0
        st.batch_sizes[len(texts)] = st.batch_sizes.get(len(texts), 0) + 1
        return out


_STOP = object()


class BatchingPredictor:
    """Dynamic batching in front of a :class:`SurrogateModel` on one background thread.

    ``submit`` never blocks on the model; the returned future resolves to a :class:`Prediction`
    or carries the exception that batch raised. A failing batch never stops the thread.
    """

    def __init__(self, model: SurrogateModel, max_batch: int = 32, window_ms: float = 2.0) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.model = model
        self.max_batch = max_batch
        self.window_s = max(0.0, window_ms) / 1000.0
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._close_lock = threading.Lock()
        self.batches = 0
        self.failed_batches = 0
        self.windows_waited = 0
        """Batches that waited the collection window (only under load; see ``_collect``)."""
        self._last_batch_size = 0
        self._thread = threading.Thread(target=self._run, name="poodle-surrogate-batcher", daemon=True)
        self._thread.start()

    def submit(self, text: str) -> Future[Prediction]:
        fut: Future[Prediction] = Future()
        with self._close_lock:
            if self._closed:
                raise RuntimeError("BatchingPredictor is closed")
            self._queue.put((text, fut))
        return fut

    def predict(self, text: str, timeout: float | None = None) -> Prediction:
        """Blocking convenience: submit and wait."""
        return self.submit(text).result(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop accepting texts, answer those already queued, stop the thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def __enter__(self) -> BatchingPredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _collect(self, first: Any) -> tuple[list[tuple[str, Future[Prediction]]], bool]:
        batch = [first]
        stop = False
        # An idle batcher (its last batch held one request) runs at once with what is queued: a
        # lone request must not pay the window. Under load the window applies, and requests that
        # arrive during a forward pass queue up for the next batch either way.
        window = self.window_s if self._last_batch_size > 1 else 0.0
        if window > 0:
            self.windows_waited += 1
        deadline = time.monotonic() + window
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        self._last_batch_size = len(batch)
        return batch, stop

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, stop = self._collect(first)
            # Cancelled futures are dropped before the forward pass.
            live = [(t, f) for t, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                preds = self.model.predict([t for t, _ in live])
                for (_, fut), pred in zip(live, preds, strict=False):
                    fut.set_result(pred)
            except Exception as exc:
                self.failed_batches += 1
                logger.warning("surrogate batch of %d failed (%s); answering one by one", len(live), exc)
                # One bad input must not fail the requests batched with it.
                for text, fut in live:
                    self._answer_one(text, fut)
            self.batches += 1
        # Answer whatever was queued before close().
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                continue
            text, fut = item
            if fut.set_running_or_notify_cancel():
                self._answer_one(text, fut)

    def _answer_one(self, text: str, fut: Future[Prediction]) -> None:
        if fut.done():
            return
        try:
            fut.set_result(self.model.predict([text])[0])
        except Exception as exc:
            fut.set_exception(exc)
