"""Score every candidate of a halving round together, through ``poodle_vllm.ops`` dispatch.

``score_candidates({model_id: features (n, d)}, labels, ["logme", "knn", "linear"])`` returns
``{model_id: {scorer: score}}`` with the same values as scoring each model alone with
:mod:`poodle_vllm.search.scorers` (the per-model path, kept for comparison):

* ``logme``: candidates are grouped by feature width (LogME's ``(d - r) log alpha`` term needs each
  candidate's true width, so no zero padding) and each group is one ``dispatch.logme_scores`` call:
  a batched ``eigh`` of the Gram matrices plus the evidence iteration of every (candidate, class)
  pair at once (one Triton launch on a GPU).
* ``knn``: features are centred per candidate, zero-padded to a common width (zero columns change
  no distance) and searched with one ``dispatch.knn_topk`` call; the vote mirrors
  :func:`~poodle_vllm.search.scorers.knn_accuracy` (majority, ties to the nearer neighbours).
* ``linear``: a cross-validated scikit-learn probe per model (no kernel: it is an iterative solver).

On CPU, dispatch runs the torch reference; with ``device="auto"`` the tensors go to the GPU when
there is one, where dispatch picks the Triton kernels.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from poodle_vllm.ops import dispatch
from poodle_vllm.search.scorers import KNNScorer, labels_as_int, make_scorer

MAX_CHUNK_BYTES = 512 * 2**20
"""Upper bound on the temporaries of one batched call; larger rounds are split by candidate."""


def resolve_device(device: str) -> torch.device:
    """``"auto"``: the GPU when torch sees one, else the CPU; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _chunks(count: int, bytes_each: int, max_bytes: int) -> list[range]:
    per = max(1, max_bytes // max(1, bytes_each))
    return [range(s, min(count, s + per)) for s in range(0, count, per)]


def logme_batched(
    features: Sequence[np.ndarray],
    labels: Any,
    device: torch.device | str = "cpu",
    max_bytes: int = MAX_CHUNK_BYTES,
) -> list[float]:
    """LogME of each ``(n, d_i)`` feature matrix; one ``dispatch.logme_scores`` call per width."""
    y = torch.from_numpy(labels_as_int(labels)).to(device)
    out = [float("nan")] * len(features)
    by_width: dict[int, list[int]] = {}
    for i, f in enumerate(features):
        by_width.setdefault(int(f.shape[1]), []).append(i)
    for width, members in by_width.items():
        n = int(features[members[0]].shape[0])
        r = min(n, width)
        # fp64 features + the Gram matrix and its eigenvectors, per candidate.
        each = 8 * (n * width + 3 * r * r)
        for part in _chunks(len(members), each, max_bytes):
            ids = [members[j] for j in part]
            x = torch.from_numpy(np.stack([features[i] for i in ids])).to(device)
            scores = dispatch.logme_scores(x, y)
            for i, v in zip(ids, scores.tolist(), strict=True):
                out[i] = float(v)
    return out


def vote_accuracy(idx: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[M]`` leave-one-out accuracy of the neighbours' majority vote, ties to nearer neighbours.

    ``idx`` ``[M, N, k]`` is sorted nearest first. Each vote weighs ``1 + 1e-6 (k - rank)``, as in
    :func:`poodle_vllm.search.scorers.knn_accuracy`, so a tied count goes to the label whose
    neighbours are closer (``ops.reference.knn_vote_accuracy`` gives ties to the smaller label).
    """
    m, n, k = idx.shape
    weight = 1.0 + 1e-6 * (k - torch.arange(k, device=idx.device, dtype=torch.float64))
    votes = torch.zeros((m, n, num_classes), dtype=torch.float64, device=idx.device)
    votes.scatter_add_(2, labels[idx], weight.expand(m, n, k).contiguous())
    return (votes.argmax(dim=-1) == labels[None, :]).double().mean(dim=1)


def knn_batched(
    features: Sequence[np.ndarray],
    labels: Any,
    k: int = KNNScorer().k,
    device: torch.device | str = "cpu",
    max_bytes: int = MAX_CHUNK_BYTES,
) -> list[float]:
    """Leave-one-out cosine kNN accuracy of each ``(n, d_i)`` feature matrix, candidates batched."""
    dev = torch.device(device)
    y = torch.from_numpy(labels_as_int(labels)).to(dev)
    n = int(features[0].shape[0])
    k = max(1, min(k, n - 1))
    width = max(int(f.shape[1]) for f in features)
    # The torch reference materialises [M, N, N] distances; the Triton kernel only [M, N, D].
    on_triton = dispatch.resolve_backend(dev) == "triton"
    each = 4 * n * width if on_triton else 4 * (n * width + 3 * n * n)
    out: list[float] = []
    for part in _chunks(len(features), each, max_bytes):
        x = torch.zeros((len(part), n, width), dtype=torch.float32, device=dev)
        for j, i in enumerate(part):
            f = torch.from_numpy(np.asarray(features[i], dtype=np.float32)).to(dev)
            # Centring removes the direction all texts share (as the per-model scorer does); it
            # comes before the zero padding so padded columns stay zero.
            x[j, :, : f.shape[1]] = f - f.mean(dim=0, keepdim=True)
        _, idx = dispatch.knn_topk(x, k, metric="cosine", exclude_self=True)
        out += vote_accuracy(idx, y, int(y.max().item()) + 1).tolist()
    return out


def score_candidates(
    features: dict[str, np.ndarray],
    labels: Any,
    scorer_names: Sequence[str],
    batched: bool = True,
    device: str = "auto",
    timings: dict[str, float] | None = None,
) -> dict[str, dict[str, float]]:
    """``{model_id: {scorer: score}}`` for every candidate in ``features`` (same ``n`` rows each).

    ``batched=False`` scores each model alone with the numpy / faiss scorers of
    :mod:`poodle_vllm.search.scorers` (the per-model path). Seconds per scorer are added to
    ``timings`` when given.
    """
    ids = list(features)
    out: dict[str, dict[str, float]] = {m: {} for m in ids}
    if not ids:
        return out
    feats = [features[m] for m in ids]
    dev = resolve_device(device)
    for name in scorer_names:
        t0 = time.perf_counter()
        if batched and name == "logme":
            values = logme_batched(feats, labels, dev)
        elif batched and name == "knn":
            values = knn_batched(feats, labels, device=dev)
        else:  # the per-model path, and the linear probe (an iterative solver, no kernel)
            scorer = make_scorer(name)
            values = [float(scorer.score(f, np.asarray(labels))) for f in feats]
        for m, v in zip(ids, values, strict=True):
            out[m][name] = v
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
    return out
