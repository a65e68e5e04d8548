"""Proxy scorers on small hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pytest

from poodle_vllm.search.halving import combine_scores, successive_halving
from poodle_vllm.search.scorers import knn_accuracy, linear_probe_accuracy, logme, make_scorer


def _data(seed=0, n=200, d=16, sep=4.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sep_feats = rng.normal(size=(n, d))
    sep_feats[:, 0] += sep * (2 * y - 1)
    rand_feats = rng.normal(size=(n, d))
    return sep_feats, rand_feats, y


def _logme_reference(f, y):
    """You et al.'s published loop (eigendecomposition of F^T F), for comparison."""
    f = f.astype(np.float64)
    n, d = f.shape
    v, s, vh = np.linalg.svd(f.T @ f)
    out = []
    for c in np.unique(y):
        y_ = (y == c).astype(np.float64)
        alpha, beta, lam = 1.0, 1.0, 1.0
        tmp = vh @ (f.T @ y_)
        for _ in range(100):
            gamma = (s / (s + lam)).sum()
            m = v @ (tmp * beta / (alpha + beta * s))
            alpha_de = (m * m).sum()
            alpha = gamma / alpha_de
            beta_de = ((y_ - f @ m) ** 2).sum()
            beta = (n - gamma) / beta_de
            new_lam = alpha / beta
            if abs(new_lam - lam) / lam < 1e-5:
                break
            lam = new_lam
        m = v @ (tmp * beta / (alpha + beta * s))
        alpha_de = (m * m).sum()
        beta_de = ((y_ - f @ m) ** 2).sum()
        ev = (
            d / 2 * np.log(alpha)
            + n / 2 * np.log(beta)
            - 0.5 * np.sum(np.log(alpha + beta * s))
            - beta / 2 * beta_de
            - alpha / 2 * alpha_de
            - n / 2 * np.log(2 * np.pi)
        )
        out.append(ev / n)
    return float(np.mean(out))


def test_logme_matches_reference_and_prefers_separable():
    sep, rnd, y = _data()
    assert logme(sep, y) == pytest.approx(_logme_reference(sep, y), rel=1e-3, abs=1e-3)
    assert logme(rnd, y) == pytest.approx(_logme_reference(rnd, y), rel=1e-3, abs=1e-3)
    assert logme(sep, y) > logme(rnd, y) + 0.1


def test_logme_handles_more_dims_than_items():
    sep, rnd, y = _data(n=30, d=64)
    assert np.isfinite(logme(sep, y)) and logme(sep, y) > logme(rnd, y)


def test_knn_hand_checkable():
    x = np.array([[0, 1], [0, 1.1], [0, 0.9], [1, 0], [1.1, 0], [0.9, 0]], dtype=np.float32)
    y = np.array([0, 0, 0, 1, 1, 1])
    assert knn_accuracy(x, y, k=2) == 1.0
    assert knn_accuracy(x, y[::-1].copy() * 0 + np.array([0, 1, 0, 1, 0, 1]), k=1) < 0.5


def test_linear_probe_separable_vs_random():
    sep, rnd, y = _data()
    assert linear_probe_accuracy(sep, y) > 0.95
    assert linear_probe_accuracy(rnd, y) < 0.7


def test_factory_rejects_unknown_names():
    assert make_scorer("knn").name == "knn"
    with pytest.raises(ValueError, match="unknown proxy scorer"):
        make_scorer("magic")


def test_combine_scores_zscores():
    c = combine_scores({"a": {"x": 1.0, "y": 10.0}, "b": {"x": 0.0, "y": 10.0}})
    assert c["a"] == pytest.approx(0.5) and c["b"] == pytest.approx(-0.5)


def test_successive_halving_eliminates_and_ranks():
    quality = {"m1": 0.9, "m2": 0.8, "m3": 0.3, "m4": 0.2, "m5": 0.1, "m6": 0.05}
    calls = []

    def score_round(models, n):
        calls.append((list(models), n))
        return {m: {"s": quality[m]} for m in models}

    ranking, rounds = successive_halving(list(quality), [10, 20, 40], score_round, eta=2, min_survivors=2)
    assert ranking == ["m1", "m2", "m3", "m4", "m5", "m6"]
    assert [len(r.candidates) for r in rounds] == [6, 3, 2]
    # one call per round, with every survivor of that round
    assert calls == [(list(quality), 10), (["m1", "m2", "m3"], 20), (["m1", "m2"], 40)]
    # a protected model survives the first round
    _, rounds = successive_halving(
        list(quality), [10, 20], score_round, eta=3, min_survivors=1, protected=["m6"]
    )
    assert "m6" in rounds[1].candidates


def test_successive_halving_rejects_a_round_without_scores():
    with pytest.raises(ValueError, match="no scores"):
        successive_halving(["a", "b"], [10], lambda models, n: {"a": {"s": 1.0}})
