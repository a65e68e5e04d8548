"""Temperature scaling (Guo et al. 2017): one scalar that makes softmax confidences honest.

Fine-tuned encoders are over-confident; the router's confidence threshold and the monitor's
confidence histogram need calibrated probabilities. Dividing logits by one temperature keeps
every argmax (so accuracy is unchanged) and is fitted on the validation split by minimising NLL.
NLL is convex in the inverse temperature, so a bracketed golden-section search finds the optimum
without torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(logits: np.ndarray, targets: Sequence[int] | np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of integer ``targets`` under ``softmax(logits / T)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))
    t = np.asarray(targets, dtype=np.int64)
    return float(np.mean(log_norm - z[np.arange(len(t)), t]))


def expected_calibration_error(
    logits: np.ndarray, targets: Sequence[int] | np.ndarray, temperature: float = 1.0, bins: int = 10
) -> float:
    """ECE with equal-width confidence bins (a second, more readable calibration number)."""
    p = softmax(logits, temperature)
    conf = p.max(axis=-1)
    correct = (p.argmax(axis=-1) == np.asarray(targets)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=False):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


@dataclass
class CalibrationResult:
    """A fitted temperature and the validation NLL/ECE before (T=1) and after."""

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    items: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_temperature(
    logits: np.ndarray,
    targets: Sequence[int] | np.ndarray,
    min_temperature: float = 0.05,
    max_temperature: float = 20.0,
    iters: int = 60,
) -> CalibrationResult:
    """Fit ``T`` minimising validation NLL; returns T=1 unchanged when there is nothing to fit."""
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        raise ValueError("cannot calibrate on an empty validation split")
    before = nll(logits, targets)
    # Golden-section search over beta = 1/T, where NLL is convex.
    lo, hi = 1.0 / max_temperature, 1.0 / min_temperature
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(logits, targets, 1.0 / c), nll(logits, targets, 1.0 / d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(logits, targets, 1.0 / c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(logits, targets, 1.0 / d)
    beta = (a + b) / 2
    temperature = 1.0 / beta
    after = nll(logits, targets, temperature)
    if after > before:  # never make things worse (degenerate splits)
        temperature, after = 1.0, before
    return CalibrationResult(
        temperature=float(temperature),
        nll_before=before,
        nll_after=after,
        ece_before=expected_calibration_error(logits, targets),
        ece_after=expected_calibration_error(logits, targets, temperature),
        items=int(len(targets)),
    )
