"""Proxy scores: how well a frozen model's features suit a labelled task, without fine-tuning.

Strategies plus a factory (``make_scorer("logme")``); unknown names raise a clear error. Each
scorer maps ``(features (n, d), labels (n,))`` to one float, higher = better.

* ``logme``: the log maximum evidence of a Bayesian linear model on the features (You et al.,
  "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021),
  averaged over one-vs-rest targets and divided by n. Pure numpy.
* ``knn``: leave-one-out k-nearest-neighbour accuracy with cosine similarity (faiss).
* ``linear``: cross-validated accuracy of a logistic-regression probe (scikit-learn).

kNN and linear-probe scores are accuracies, so they double as a (frozen-feature) predicted
accuracy; LogME is on its own scale and is only used for ranking.

The search scores a whole halving round at once with :mod:`poodle_vllm.search.batch_scores`
(LogME and kNN through ``poodle_vllm.ops``); these per-model versions are the independent
numpy / faiss implementations it is tested against (``SearchConfig(batched_scoring=False)``), and
the linear probe is used by both paths.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Scorer(Protocol):
    name: str
    is_accuracy: bool

    def score(self, features: np.ndarray, labels: np.ndarray) -> float: ...


def labels_as_int(labels: Any) -> np.ndarray:
    _, y = np.unique(np.asarray(labels), return_inverse=True)
    return y.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# LogME
# ---------------------------------------------------------------------------------------------
def _logme_one_target(
    y: np.ndarray, u: np.ndarray, sigma: np.ndarray, n: int, d: int, max_iter: int = 100, tol: float = 1e-5
) -> float:
    """Evidence/n for one real-valued target given the thin SVD ``F = U diag(sigma) V^T``.

    Model: y = F m + e, m ~ N(0, 1/alpha I_d), e ~ N(0, 1/beta I_n). The fixed-point updates
    are MacKay's: gamma = sum beta s_i / (alpha + beta s_i), alpha = gamma / |m|^2,
    beta = (n - gamma) / |y - F m|^2 with s_i = sigma_i^2 the eigenvalues of F^T F. The d - r
    zero eigenvalues (r = rank) add log(alpha) terms only, which the closed form keeps.
    """
    s = sigma**2
    z = u.T @ y  # coordinates of y in the column space of F
    y_sq = float(y @ y)
    z_sq = z**2
    resid_out = max(y_sq - float(z_sq.sum()), 0.0)  # part of y outside F's column space
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        denom = alpha + beta * s
        gamma = float((beta * s / denom).sum())
        m_sq = float((beta**2 * s * z_sq / denom**2).sum())  # |m|^2 with m = beta V diag(sigma/denom) z
        res_sq = float((z_sq * (alpha / denom) ** 2).sum()) + resid_out  # |y - F m|^2
        new_alpha = gamma / max(m_sq, 1e-12)
        new_beta = (n - gamma) / max(res_sq, 1e-12)
        converged = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) < tol
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    denom = alpha + beta * s
    m_sq = float((beta**2 * s * z_sq / denom**2).sum())
    res_sq = float((z_sq * (alpha / denom) ** 2).sum()) + resid_out
    r = len(s)
    log_det = float(np.log(denom).sum()) + (d - r) * np.log(alpha)
    evidence = (
        d / 2.0 * np.log(alpha)
        + n / 2.0 * np.log(beta)
        - 0.5 * log_det
        - beta / 2.0 * res_sq
        - alpha / 2.0 * m_sq
        - n / 2.0 * np.log(2 * np.pi)
    )
    return float(evidence / n)


def logme(features: np.ndarray, labels: Any) -> float:
    """LogME of ``features`` for classification ``labels`` (mean over one-vs-rest targets)."""
    f = np.asarray(features, dtype=np.float64)
    y = labels_as_int(labels)
    n, d = f.shape
    u, sigma, _ = np.linalg.svd(f, full_matrices=False)
    classes = np.unique(y)
    # Two classes: one target carries all information (the other is its complement); use both
    # anyway, like the reference implementation, so the scale matches multi-class tasks.
    evidences = [_logme_one_target((y == c).astype(np.float64), u, sigma, n, d) for c in classes]
    return float(np.mean(evidences))


class LogMEScorer:
    name = "logme"
    is_accuracy = False

    def score(self, features: np.ndarray, labels: np.ndarray) -> float:
        return logme(features, labels)


# ---------------------------------------------------------------------------------------------
# kNN (faiss)
# ---------------------------------------------------------------------------------------------
def knn_accuracy(features: np.ndarray, labels: Any, k: int = 10) -> float:
    """Leave-one-out accuracy of a cosine k-NN majority vote (ties: nearest neighbour wins)."""
    import faiss

    y = labels_as_int(labels)
    x = np.ascontiguousarray(np.asarray(features, dtype=np.float32)).copy()
    x -= x.mean(axis=0, keepdims=True)  # centring: removes the shared direction of all texts
    faiss.normalize_L2(x)
    n = len(x)
    k = max(1, min(k, n - 1))
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, nn = index.search(x, k + 1)
    correct = 0
    n_classes = int(y.max()) + 1
    for i in range(n):
        neigh = [j for j in nn[i] if j != i and j >= 0][:k]
        votes = np.zeros(n_classes)
        for rank, j in enumerate(neigh):
            votes[y[j]] += 1.0 + 1e-6 * (k - rank)  # tiny bonus breaks ties towards closer ones
        correct += int(np.argmax(votes) == y[i])
    return correct / n


class KNNScorer:
    name = "knn"
    is_accuracy = True

    def __init__(self, k: int = 10) -> None:
        self.k = k

    def score(self, features: np.ndarray, labels: np.ndarray) -> float:
        return knn_accuracy(features, labels, self.k)


# ---------------------------------------------------------------------------------------------
# Linear probe
# ---------------------------------------------------------------------------------------------
def linear_probe_accuracy(
    features: np.ndarray, labels: Any, folds: int = 3, c: float = 1.0, seed: int = 0
) -> float:
    """Stratified k-fold accuracy of a standardised logistic-regression probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = labels_as_int(labels)
    counts = np.bincount(y)
    folds = int(max(2, min(folds, counts.min())))
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(clf, np.asarray(features, dtype=np.float64), y, cv=cv)))


class LinearProbeScorer:
    name = "linear"
    is_accuracy = True

    def __init__(self, folds: int = 3, c: float = 1.0) -> None:
        self.folds = folds
        self.c = c

    def score(self, features: np.ndarray, labels: np.ndarray) -> float:
        return linear_probe_accuracy(features, labels, self.folds, self.c)


SCORERS: dict[str, type] = {"logme": LogMEScorer, "knn": KNNScorer, "linear": LinearProbeScorer}


def make_scorer(name: str, **kwargs: Any) -> Scorer:
    """The scorer called ``name`` (``logme``, ``knn``, ``linear``)."""
    try:
        cls = SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown proxy scorer {name!r}; choose from {sorted(SCORERS)}") from None
    return cls(**kwargs)  # type: ignore[no-any-return]
