"""Drift statistics for a serving surrogate (pure numpy).

The reference is the surrogate's behaviour during the shadow phase, when it was checked
against the LLM. While serving, a shift of its confidence distribution (population stability
index, PSI) or of the mean input embedding signals that traffic no longer looks like the data
the gate approved, so the task should be audited harder or handed back to the LLM.

PSI = sum_i (a_i - e_i) * ln(a_i / e_i) over histogram bins with expected (reference) shares
e_i and actual shares a_i. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 shift.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def psi(expected_counts: np.ndarray, actual_counts: np.ndarray, eps: float = 1e-4) -> float:
    """Population stability index of two histograms over the same bins.

    Empty bins get share ``eps`` (then shares are renormalised) so one empty bin cannot make
    the index infinite.
    """
    e = np.asarray(expected_counts, dtype=np.float64)
    a = np.asarray(actual_counts, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1:
        raise ValueError(f"histograms must be 1-d and of equal length, got {e.shape} and {a.shape}")
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("histograms must not be empty")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def quantile_edges(reference: np.ndarray, bins: int, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Bin edges at the reference's quantiles (equal-mass bins), widened to [lo, hi].

    NOTE: confidences bunch up near 1.0, so equal-width bins would put most mass in one bin and
    hide shifts inside it; quantile bins keep every bin informative. Ties collapse duplicate
    edges, so fewer bins may result.
    """
    ref = np.asarray(reference, dtype=np.float64)
    inner = np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]) if ref.size else np.array([])
    edges = np.unique(np.concatenate([[lo], inner, [hi]]))
    if edges.size < 2:
        edges = np.array([lo, hi])
    return edges


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in ``edges`` (values outside are clipped into the end bins)."""
    v = np.clip(np.asarray(values, dtype=np.float64), edges[0], edges[-1])
    idx = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(idx, minlength=len(edges) - 1)


@dataclass
class DriftReport:
    """One drift check."""

    psi: float
    """PSI of the current window against the shadow-phase reference (nan until ``min_count``)."""
    drifted: bool
    n: int
    """Confidences in the current window."""
    reference_n: int
    threshold: float
    embedding_shift: float | None = None
    """Standardised distance of the window's mean embedding from the reference mean (None if unused)."""
    embedding_drifted: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DriftMonitor:
    """PSI of the surrogate's recent confidences against the shadow-phase reference.

    ``update(confidences)`` adds the newest predictions to a sliding window and reports; no
    verdict is given before ``min_count`` values (a PSI of a few dozen samples is noise).
    """

    def __init__(
        self,
        reference_confidences: np.ndarray | list[float],
        threshold: float = 0.25,
        bins: int = 10,
        window: int = 1000,
        min_count: int = 200,
        reference_embeddings: np.ndarray | None = None,
        embedding_threshold: float = 3.0,
    ):
        ref = np.asarray(reference_confidences, dtype=np.float64)
        if ref.size == 0:
            raise ValueError("DriftMonitor needs a non-empty reference (the shadow-phase confidences)")
        self.threshold = threshold
        self.min_count = min_count
        self.edges = quantile_edges(ref, bins)
        self.reference_counts = histogram(ref, self.edges)
        self.reference_n = int(ref.size)
        self._window: deque[float] = deque(maxlen=window)
        self.embedding_threshold = embedding_threshold
        self._emb_mean: np.ndarray | None = None
        self._emb_se_scale: float | None = None
        self._emb_window: deque[np.ndarray] = deque(maxlen=window)
        if reference_embeddings is not None:
            emb = np.asarray(reference_embeddings, dtype=np.float64)
            self._emb_mean = emb.mean(axis=0)
            # Average per-dimension variance: the scale of one sample's distance from the mean.
            self._emb_se_scale = float(np.sqrt(emb.var(axis=0).mean()) + 1e-12)

    @classmethod
    def from_config(
        cls, reference_confidences: np.ndarray | list[float], config: Any, **kwargs: Any
    ) -> DriftMonitor:
        """Build from a :class:`~poodle_vllm.config.ServingConfig` (uses ``drift_psi``)."""
        return cls(reference_confidences, threshold=config.drift_psi, **kwargs)

    def update(
        self, confidences: np.ndarray | list[float], embeddings: np.ndarray | None = None
    ) -> DriftReport:
        self._window.extend(float(c) for c in np.asarray(confidences, dtype=np.float64).ravel())
        if embeddings is not None and self._emb_mean is not None:
            self._emb_window.extend(np.asarray(embeddings, dtype=np.float64))
        return self.report()

    def report(self) -> DriftReport:
        n = len(self._window)
        shift, emb_drifted = self._embedding_shift()
        if n < self.min_count:
            return DriftReport(
                float("nan"),
                False,
                n,
                self.reference_n,
                self.threshold,
                shift,
                False,
                f"{n} of {self.min_count} samples",
            )
        value = psi(self.reference_counts, histogram(np.fromiter(self._window, np.float64), self.edges))
        drifted = value > self.threshold
        reason = f"PSI {value:.3f} {'>' if drifted else '<='} {self.threshold:.3f}"
        if emb_drifted:
            reason += f"; embedding mean shift {shift:.2f} > {self.embedding_threshold:.2f}"
        return DriftReport(
            value, drifted or emb_drifted, n, self.reference_n, self.threshold, shift, emb_drifted, reason
        )

    def _embedding_shift(self) -> tuple[float | None, bool]:
        """Distance of the window's mean embedding from the reference mean, in standard errors.

        The standard error of a mean of m samples is scale / sqrt(m) per dimension, so the
        normalised distance stays comparable across window sizes; with no shift it is about
        sqrt(d) / sqrt(d) = O(1).
        """
        if self._emb_mean is None or self._emb_se_scale is None or len(self._emb_window) < self.min_count:
            return None, False
        m = len(self._emb_window)
        diff = np.stack(list(self._emb_window)).mean(axis=0) - self._emb_mean
        rms = float(np.sqrt(np.mean(diff**2)))
        shift = rms / (self._emb_se_scale / np.sqrt(m))
        return shift, shift > self.embedding_threshold

    def reset(self) -> None:
        self._window.clear()
        self._emb_window.clear()


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    mon = DriftMonitor(rng.beta(8, 1, 2000))
    print("same distribution:", mon.update(rng.beta(8, 1, 500)))
    mon.reset()
    print("shifted:", mon.update(rng.beta(3, 2, 500)))
