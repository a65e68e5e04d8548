"""Load an encoder folder, read its metadata, run it, and measure its latency.

Torch and transformers are imported inside the functions so ``poodle store list`` stays fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def set_torch_threads(threads: int | None = None) -> int:
    """Use at most ``threads`` (default ``POODLE_TORCH_THREADS`` or 2): the machine is shared."""
    import torch

    n = threads or int(os.environ.get("POODLE_TORCH_THREADS", "2"))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def weights_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    for name in WEIGHT_FILES:
        if (p / name).exists():
            return p / name
    shards = sorted(p.glob("model-*.safetensors"))
    if shards:
        return shards[0]
    raise FileNotFoundError(f"no weights ({', '.join(WEIGHT_FILES)}) in {p}")


def weights_sha(path: str | os.PathLike[str]) -> str:
    """sha256 (first 16 hex digits) of the weights file: identifies the weights for the cache."""
    h = hashlib.sha256()
    with open(weights_file(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def folder_size(path: str | os.PathLike[str]) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def read_model_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``poodle-model.json`` of a prepared folder ({} when absent)."""
    f = Path(path) / "poodle-model.json"
    if f.exists():
        try:
            data = json.loads(f.read_text())
            return data if isinstance(data, dict) else {}
        except json.JSONDecodeError:
            return {}
    return {}


@dataclass
class LoadedEncoder:
    """A model and tokenizer in memory, with the seconds loading took."""

    model: Any
    tokenizer: Any
    load_s: float
    num_layers: int


def load_encoder(path: str | os.PathLike[str]) -> LoadedEncoder:
    """Load the bare encoder (any task head in the checkpoint is dropped) in eval mode, fp32."""
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    from poodle_vllm.train.heads import load_encoder_of_classifier, load_tokenizer

    set_torch_threads()
    t0 = time.perf_counter()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # head weights "not used" warnings are expected here
    hf_logging.disable_progress_bar()
    try:
        tokenizer = load_tokenizer(path)
        # A task-tuned zoo member saved with Poodle's mean-pooling head has its own model_type.
        model = load_encoder_of_classifier(path)
        if model is None:
            model = AutoModel.from_pretrained(str(path), dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.eval()
    return LoadedEncoder(model, tokenizer, time.perf_counter() - t0, int(model.config.num_hidden_layers))


def pooled_hidden_states(
    enc: LoadedEncoder, texts: list[str], max_length: int = 64, batch_size: int = 32
) -> dict[str, Any]:
    """Every layer's pooled vectors for ``texts`` in one pass.

    Returns ``{"mean": array (L+1, n, d), "cls": array (L+1, n, d)}`` (float32); index 0 is the
    embedding output and index ``L`` the last layer. Texts are batched by length so padding
    stays small; the output is in the input order.
    """
    import numpy as np
    import torch

    n = len(texts)
    order = sorted(range(n), key=lambda i: len(texts[i]))
    layers = enc.num_layers + 1
    d = int(enc.model.config.hidden_size)
    mean = np.zeros((layers, n, d), dtype=np.float32)
    cls = np.zeros((layers, n, d), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            batch = enc.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out = enc.model(**batch, output_hidden_states=True)
            mask = batch["attention_mask"].unsqueeze(-1).to(torch.float32)
            denom = mask.sum(dim=1).clamp(min=1.0)
            for layer, h in enumerate(out.hidden_states):
                mean[layer, idx] = ((h * mask).sum(dim=1) / denom).numpy()
                cls[layer, idx] = h[:, 0].numpy()
    return {"mean": mean, "cls": cls}


def count_parameters(model: Any, num_layers: int | None = None) -> int:
    """Encoder parameters; with ``num_layers`` only the embeddings and the first layers count."""
    total = 0
    for name, p in model.named_parameters():
        if num_layers is not None and ".layer." in name:
            idx = int(name.split(".layer.")[1].split(".")[0])
            if idx >= num_layers:
                continue
        total += p.numel()
    return total


def measure_latency_ms(
    enc: LoadedEncoder, seq_len: int, batch_size: int = 32, repeats: int = 1, num_layers: int | None = None
) -> float:
    """CPU milliseconds per item for a full batch of ``seq_len`` tokens (after one warm-up)."""
    import torch

    vocab = int(enc.model.config.vocab_size)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, max(6, vocab - 1), (batch_size, seq_len), generator=gen)
    mask = torch.ones_like(ids)
    model = enc.model
    saved = None
    if num_layers is not None and num_layers < enc.num_layers:
        # Time a truncation without materialising it: run only the first layers.
        saved = model.encoder.layer
        model.encoder.layer = saved[:num_layers]
    try:
        with torch.inference_mode():
            model(input_ids=ids[:2, :16], attention_mask=mask[:2, :16])  # warm-up (allocations)
            best = float("inf")
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                model(input_ids=ids, attention_mask=mask)
                best = min(best, time.perf_counter() - t0)
    finally:
        if saved is not None:
            model.encoder.layer = saved
    return 1000.0 * best / batch_size


def create_tiny_encoder(
    out_dir: str | os.PathLike[str],
    num_layers: int = 4,
    hidden_size: int = 32,
    seed: int = 0,
    words: list[str] | None = None,
) -> Path:
    """A small random BERT with a word-level tokenizer, saved as an HF folder (tests, demos)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab_words = words or [
        "good", "great", "fine", "love", "bad", "awful", "poor", "hate", "movie", "film", "the", "a",
        "game", "team", "market", "stock", "is", "was", "very", "not", "plot", "acting", "score", "news",
    ]  # fmt: skip
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(specials + [w for w in vocab_words if w not in specials])}
    tokenizer = BertTokenizer(vocab=vocab)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 16),
        intermediate_size=hidden_size * 2,
        max_position_embeddings=260,
    )
    model = BertModel(config, add_pooling_layer=False)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
