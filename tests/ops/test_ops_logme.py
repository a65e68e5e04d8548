"""Batched LogME: Triton evidence kernel vs torch reference vs search.scorers' numpy LogME.

Tolerances: fp64 throughout; kernel vs reference atol=1e-9, reference vs the numpy
per-model implementation atol=1e-8 (eigh of the Gram matrix, or SVD where that is
ill-conditioned, vs SVD of F).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poodle_vllm.ops import reference

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"


def _features(m: int, n: int, d: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=g)
    centers = torch.randn(c, d, generator=g)
    x = torch.stack([centers[labels] * (0.2 + i) + torch.randn(n, d, generator=g) for i in range(m)])
    return x, labels


@pytest.mark.parametrize("m,n,d,c", [(2, 40, 12, 3), (1, 30, 45, 2), (3, 25, 7, 4)])
def test_logme_kernel_matches_reference(triton_ops, m, n, d, c):
    x, labels = _features(m, n, d, c, seed=n + d)
    x, labels = x.to(DEVICE), labels.to(DEVICE)
    s, z_sq, resid = reference.logme_prepare(x, labels)
    # Few iterations keep the CPU interpreter fast; the masked early stop is still exercised.
    got = triton_ops.logme.logme_evidence(s, z_sq, resid, n, d, max_iter=25)
    want = reference.logme_evidence(s, z_sq, resid, n, d, max_iter=25)
    assert got.shape == (m, c) and got.dtype == torch.float64
    torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)


def test_reference_matches_numpy_logme():
    scorers = pytest.importorskip("poodle_vllm.search.scorers")
    for m, n, d, c in [(2, 80, 16, 3), (2, 30, 50, 2)]:  # D < N and D > N (rank-deficient Gram)
        x, labels = _features(m, n, d, c, seed=d)
        got = reference.logme_scores(x, labels)
        want = [scorers.logme(x[i].numpy(), labels.numpy()) for i in range(m)]
        np.testing.assert_allclose(got.numpy(), want, atol=1e-8, rtol=1e-8)


def test_logme_ranks_informative_features_higher():
    x, labels = _features(2, 120, 10, 3, seed=1)  # candidate 1 has 6x stronger class signal
    scores = reference.logme_scores(x, labels)
    assert scores[1] > scores[0]


def test_rank_deficient_features():
    scorers = pytest.importorskip("poodle_vllm.search.scorers")
    x, labels = _features(1, 60, 12, 3, seed=3)
    x[:, :, 6:] = x[:, :, :6]  # duplicated columns: rank 6 of 12
    s, _, _ = reference.logme_prepare(x, labels)
    assert int((s > 1e-10 * s.max()).sum()) == 6
    got = reference.logme_scores(x, labels)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.numpy(), [scorers.logme(x[0].numpy(), labels.numpy())], atol=1e-8)


def test_ill_conditioned_features_fall_back_to_svd():
    """Directions ~1e-7 of the largest (s ~1e-14) still move the evidence when labels fit well."""
    scorers = pytest.importorskip("poodle_vllm.search.scorers")
    x, labels = _features(2, 120, 16, 2, seed=5)
    x = x * 5.0
    x[0, :, 10:] *= 3e-7  # candidate 0: six tiny directions; candidate 1 well conditioned
    want = [scorers.logme(x[i].numpy(), labels.numpy()) for i in range(2)]
    np.testing.assert_allclose(reference.logme_scores(x, labels).numpy(), want, atol=1e-8, rtol=1e-8)
    s_svd, z_svd, r_svd = reference.logme_prepare(x, labels, method="svd")
    s_auto, z_auto, r_auto = reference.logme_prepare(x, labels)
    torch.testing.assert_close(s_auto[0].sort().values, s_svd[0].sort().values, rtol=1e-9, atol=0)
    # the well-conditioned candidate kept the (faster) eigh spectrum: same values, eigh's order
    torch.testing.assert_close(s_auto[1].sort().values, s_svd[1].sort().values, rtol=1e-9, atol=1e-6)
    with pytest.raises(ValueError, match="decomposition"):
        reference.logme_prepare(x, labels, method="qr")
