"""A tiny random BERT and a toy labelled task, for fast tests and demos without prepared models.

The encoder has 2 layers of width 32 and a word-level vocabulary covering the toy sentences, so
fine-tuning it for a few seconds on CPU learns the toy task (sentiment carried by one word).

    python -m poodle_vllm.train.toy /tmp/tiny   # builds the folder and trains a surrogate on it
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

POSITIVE_WORDS = ["good", "great", "fine", "love", "best", "fun"]
NEGATIVE_WORDS = ["bad", "awful", "boring", "worst", "hate", "dull"]
_FILLER = ["the", "a", "movie", "film", "is", "was", "and", "it", "plot", "acting", "really", "quite"]


def build_tiny_encoder(path: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised 2-layer BERT (no classifier head) plus tokenizer to ``path``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","]
    vocab += POSITIVE_WORDS + NEGATIVE_WORDS + _FILLER + list(letters) + ["##" + c for c in letters]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(path)
    return path


def toy_sentiment_examples(n: int, seed: int = 0, positive_share: float = 0.5) -> tuple[list[str], list[str]]:
    """``n`` short sentences whose label is decided by one sentiment word among filler words."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        positive = rng.random() < positive_share
        word = rng.choice(POSITIVE_WORDS if positive else NEGATIVE_WORDS)
        words = rng.sample(_FILLER, rng.randint(3, 8))
        words.insert(rng.randint(0, len(words)), word)
        texts.append(" ".join(words))
        labels.append("positive" if positive else "negative")
    return texts, labels


if __name__ == "__main__":
    import logging

    from poodle_vllm.train.args import TrainingArguments
    from poodle_vllm.train.trainer import SurrogateTrainer

    logging.basicConfig(level=logging.INFO)
    base = build_tiny_encoder(sys.argv[1] if len(sys.argv) > 1 else "/tmp/poodle-tiny-encoder")
    texts, labels = toy_sentiment_examples(300)
    args = TrainingArguments(max_length=32, epochs=8, learning_rate=3e-3, early_stopping_patience=0)
    result = SurrogateTrainer(args).train(base, texts, labels)
    print(f"val agreement {result.best_val_agreement:.3f} in {result.train_time_s:.1f}s")
