"""The one documented set of knobs for developing a surrogate (shape after setfit's TrainingArguments)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class TrainingArguments:
    """How a base encoder is fine-tuned into a surrogate classifier.

    Defaults suit a small CPU host (2 cores): short sequences, few epochs, a time budget.
    """

    max_length: int = 128
    """Tokens per text; longer texts are truncated and the truncated share is recorded."""
    batch_size: int = 16
    """Training (and evaluation) batch size."""
    epochs: int = 3
    """Maximum number of passes over the training split (early stopping may end sooner)."""
    learning_rate: float = 1e-4
    """Peak AdamW learning rate (reached after warm-up, then decayed linearly to 0). Higher than the
    usual 2e-5..5e-5 for BERT because runs here are short (a few hundred steps): MiniLM-L6 on 500
    Rotten Tomatoes items reached 0.71 test accuracy at 5e-5 and 0.76 at 1.5e-4 in 2 epochs."""
    head_learning_rate: float = 1e-3
    """Learning rate of the new classification head. It starts from random weights, so with a few
    hundred items (a few dozen steps) the encoder's rate leaves it near chance; a higher rate for
    the head alone (as in linear-probe-then-fine-tune practice) fixes that without disturbing the
    pre-trained encoder."""
    pooling: str = "mean"
    """The classification head's input: ``mean`` (masked mean of the token states, how the store's
    sentence encoders were trained and what model search scores; ``train/modeling.py``) or ``cls``
    (transformers' standard head over BERT's pooler of the first token, which those checkpoints
    never trained). Measured on 500 rotten_tomatoes items, 3 epochs, 1,000 test items: all-MiniLM-L6-v2
    0.773 (``mean``) vs 0.722 (``cls``) with seed 0 and 0.790 vs 0.790 with seed 1;
    paraphrase-MiniLM-L3-v2 0.761 vs 0.746 (seed 1)."""
    head_init: str = "random"
    """How the new classification head starts: ``random`` (the usual), or ``linear_probe``: a
    logistic regression on the frozen encoder's pooled outputs of the training split first. Measured
    with the ``cls`` head on 240 rotten_tomatoes items with all-MiniLM-L6-v2: 0.67 test accuracy
    from ``random`` and 0.56 from ``linear_probe`` (the untrained pooler makes the probe fit a
    random projection), hence the default."""
    min_steps: int = 60
    """Run at least this many optimisation steps (more epochs on small sets), capped at 20 epochs."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and LayerNorm weights)."""
    warmup_ratio: float = 0.1
    """Share of all optimisation steps spent warming the learning rate up linearly from 0."""
    seed: int = 0
    """Seed for the split, the classifier head's initialisation, shuffling and dropout."""
    early_stopping_patience: int = 2
    """Stop after this many evaluations without a better validation agreement; 0 disables it."""
    eval_every_steps: int = 0
    """Evaluate on the validation split every N optimisation steps; 0 = once per epoch."""
    time_budget_s: float | None = None
    """Stop training (keeping the best checkpoint so far) once this many seconds have passed."""
    class_weights: bool = True
    """Weight the loss by inverse class frequency so a skewed label distribution cannot be won by
    always answering the majority label."""
    val_fraction: float = 0.15
    """Share of the items held out (stratified by label) for early stopping and calibration."""
    min_items: int = 20
    """Refuse to train on fewer items than this (a surrogate from a handful of answers is noise)."""
    min_per_label: int = 2
    """Every label needs at least this many items; a one-class set is always refused."""
    num_threads: int | None = 1
    """torch intra-op threads while training (restored afterwards); None leaves torch's default.
    1 by default: on a 2-core host shared with vLLM, 2 threads made a tiny model's training ~80x
    slower (OpenMP workers spin-waiting for a busy core); raise it on an idle many-core host."""
    soft_labels: bool = False
    """Train on per-item label distributions (e.g. the LLM's label probabilities) when the caller
    passes them; hard labels are used otherwise."""
    calibrate: bool = True
    """Fit a softmax temperature on the validation split after training."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""
    log_every_steps: int = 20
    """Log (and call the progress callback) every N optimisation steps."""

    def validate(self) -> TrainingArguments:
        """Raise ValueError for values that cannot work; returns self for chaining."""
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {self.pooling!r}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be >= 1")
        if not 0.0 < self.val_fraction < 0.9:
            raise ValueError(f"val_fraction must be in (0, 0.9), got {self.val_fraction}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be > 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingArguments:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training argument(s) {unknown}; valid: {sorted(names)}")
        return cls(**data)
