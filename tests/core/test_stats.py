"""Drift statistics: PSI by hand, no alarm without shift, alarm on a real shift."""

from __future__ import annotations

import math

import numpy as np
import pytest

from poodle_vllm.config import ServingConfig
from poodle_vllm.core.stats import DriftMonitor, histogram, psi, quantile_edges


def test_psi_hand_computed():
    e = np.array([50, 50])
    a = np.array([25, 75])
    want = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi(e, a) == pytest.approx(want, rel=1e-3)
    assert psi(e, e) == 0.0
    assert math.isfinite(psi(np.array([10, 0]), np.array([0, 10])))  # empty bins are smoothed
    with pytest.raises(ValueError):
        psi(np.array([1, 2]), np.array([1, 2, 3]))


def test_quantile_bins_are_equal_mass():
    rng = np.random.default_rng(1)
    ref = rng.beta(8, 1, 5000)
    edges = quantile_edges(ref, 10)
    counts = histogram(ref, edges)
    assert len(counts) == 10 and counts.sum() == 5000
    assert counts.min() >= 490 and counts.max() <= 510
    assert histogram(np.array([-1.0, 2.0]), edges).tolist() == [1] + [0] * 8 + [1]  # clipped into end bins


def test_drift_monitor_detects_a_confidence_shift():
    rng = np.random.default_rng(0)
    reference = rng.beta(8, 1, 3000)  # confident surrogate during shadow
    mon = DriftMonitor.from_config(reference, ServingConfig(drift_psi=0.25), min_count=200)
    early = mon.update(rng.beta(8, 1, 50))
    assert not early.drifted and math.isnan(early.psi)  # too few samples to judge
    same = mon.update(rng.beta(8, 1, 950))
    assert not same.drifted and same.psi < 0.1, same
    mon.reset()
    shifted = mon.update(rng.beta(3, 2, 1000))  # traffic the surrogate is unsure about
    assert shifted.drifted and shifted.psi > 0.25, shifted


def test_embedding_mean_shift():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(2000, 16))
    mon = DriftMonitor(rng.beta(8, 1, 2000), reference_embeddings=ref, min_count=100)
    calm = mon.update(rng.beta(8, 1, 300), embeddings=rng.normal(size=(300, 16)))
    assert calm.embedding_shift is not None and not calm.embedding_drifted
    mon.reset()
    moved = mon.update(rng.beta(8, 1, 300), embeddings=rng.normal(loc=0.5, size=(300, 16)))
    assert moved.embedding_drifted and moved.drifted
