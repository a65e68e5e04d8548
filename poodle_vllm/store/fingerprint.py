"""Model fingerprints and a faiss index over them ("models similar to this one", clustering).

A fingerprint describes what a model *does* to a fixed probe set of sentences. A model's mean
probe embedding alone cannot be compared across models: hidden sizes differ (384 vs 768) and
even two models of the same size use unrelated coordinate systems (a fine-tuned copy is close,
a re-trained one is an arbitrary rotation away). So the fingerprint is the model's
*similarity structure* over the probes instead:

1. embed the P probe sentences (P x d), centre them (subtract the mean probe embedding, which
   removes the large common direction every sentence encoder has) and L2-normalise each row;
2. take the P x P cosine-similarity matrix and flatten its upper triangle (P(P-1)/2 numbers);
3. centre and L2-normalise that vector, so the inner product of two fingerprints is the
   Pearson correlation of their similarity structures (representational similarity analysis).

This is independent of hidden size and invariant to rotations and scaling of the embedding
space; two models with the same fingerprint rank probe pairs the same way. (A random projection
of the mean embedding would also fix the size mismatch but not the arbitrary basis.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

# 36 probes, 6 each from areas a text classifier meets: sentiment, topics, questions, ops, etc.
PROBE_SENTENCES: tuple[str, ...] = (
    "This movie was a delight from start to finish.",
    "The plot was dull and the acting was even worse.",
    "I would happily watch it again with my family.",
    "A tedious, overlong mess that wastes a fine cast.",
    "The service was quick and the staff were friendly.",
    "My order arrived broken and nobody answered my emails.",
    "The central bank raised interest rates by a quarter point.",
    "Shares of the chip maker fell after weak quarterly earnings.",
    "The striker scored twice as the home team won the final.",
    "The tennis champion withdrew from the tournament with an injury.",
    "Scientists discovered water ice beneath the surface of Mars.",
    "The new smartphone ships with a faster processor and better camera.",
    "Rebels and government forces agreed to a ceasefire on Sunday.",
    "The prime minister called an early election for next spring.",
    "How do I reset my password if I lost access to my email?",
    "What time does the museum open on public holidays?",
    "Can you recommend a good book about ancient Rome?",
    "Is it safe to take ibuprofen together with paracetamol?",
    "The database connection pool is exhausted and requests are timing out.",
    "Restart the pod after updating the configuration map.",
    "Disk usage on the primary node exceeded ninety percent.",
    "The deployment failed because the container image was missing.",
    "Latency spiked when the cache was flushed during peak traffic.",
    "Roll back to the previous release and page the on-call engineer.",
    "Preheat the oven and bake the bread for forty minutes.",
    "Add a pinch of salt and stir the sauce until it thickens.",
    "The patient reported mild headaches and trouble sleeping.",
    "Take one tablet twice a day after meals.",
    "The contract may be terminated with thirty days written notice.",
    "The tenant shall pay rent on the first day of each month.",
    "Thank you so much, this really made my day!",
    "I am furious that my flight was cancelled again.",
    "The weather will be sunny with light winds in the afternoon.",
    "Heavy rain is expected to cause flooding along the coast.",
    "The cat slept on the warm windowsill all afternoon.",
    "Please find the attached invoice for last month's services.",
)


def fingerprint_from_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """The fingerprint (P(P-1)/2 floats, unit norm) of one model's probe embeddings (P x d)."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    iu = np.triu_indices(sim.shape[0], k=1)
    v = sim[iu]
    v = v - v.mean()
    norm = np.linalg.norm(v)
    return (v / norm if norm > 1e-12 else v).astype(np.float32)


class FingerprintIndex:
    """Exact inner-product faiss index over fingerprints (correlation of similarity structure)."""

    def __init__(self, ids: list[str], fingerprints: np.ndarray) -> None:
        import faiss

        self.ids = list(ids)
        self.vectors = np.ascontiguousarray(np.asarray(fingerprints, dtype=np.float32))
        if len(self.ids) != len(self.vectors):
            raise ValueError("ids and fingerprints differ in length")
        dim = self.vectors.shape[1] if self.vectors.ndim == 2 and len(self.vectors) else 1
        self.index = faiss.IndexFlatIP(dim)
        if len(self.ids):
            self.index.add(self.vectors)

    @classmethod
    def from_entries(cls, entries: list[Any]) -> FingerprintIndex:
        """Index the catalog entries that have a fingerprint."""
        have = [e for e in entries if e.fingerprint]
        vecs = np.array([e.fingerprint for e in have], dtype=np.float32).reshape(len(have), -1)
        return cls([e.id for e in have], vecs)

    def similar(self, model_id: str, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most similar other models, with correlation in [-1, 1]."""
        if model_id not in self.ids:
            raise KeyError(f"model {model_id!r} has no fingerprint")
        q = self.vectors[self.ids.index(model_id)][None, :]
        scores, idx = self.index.search(q, min(k + 1, len(self.ids)))
        out = [
            (self.ids[i], float(s))
            for s, i in zip(scores[0], idx[0], strict=False)
            if i >= 0 and self.ids[i] != model_id
        ]
        return out[:k]

    def cluster(self, n_clusters: int, seed: int = 0) -> dict[str, int]:
        """Spherical k-means (faiss) of the fingerprints: ``{model_id: cluster}``."""
        import faiss

        n = len(self.ids)
        if n == 0:
            return {}
        k = max(1, min(n_clusters, n))
        if k == n:
            return {m: i for i, m in enumerate(self.ids)}
        km = faiss.Kmeans(self.vectors.shape[1], k, niter=25, seed=seed, spherical=True, verbose=False)
        # faiss warns below 39 points per centroid; the catalog is small by nature.
        km.cp.min_points_per_centroid = 1
        km.train(self.vectors)
        _, assign = km.index.search(self.vectors, 1)
        return {m: int(c) for m, c in zip(self.ids, assign[:, 0], strict=False)}

    def representatives(self, clusters: dict[str, int]) -> dict[int, str]:
        """Per cluster, the member closest to the cluster's mean fingerprint."""
        reps: dict[int, str] = {}
        for c in sorted(set(clusters.values())):
            members = [m for m, cc in clusters.items() if cc == c]
            vecs = self.vectors[[self.ids.index(m) for m in members]]
            centre = vecs.mean(axis=0)
            reps[c] = members[int(np.argmax(vecs @ centre))]
        return reps
