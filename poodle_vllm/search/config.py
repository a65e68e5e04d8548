"""Typed configuration of a model search."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SearchConfig:
    """How a model search filters, scores and prunes candidates."""

    scorers: list[str] = field(default_factory=lambda: ["logme", "linear"])
    """Proxy scorers (``logme``, ``knn``, ``linear``); their per-round z-scores are averaged."""
    batched_scoring: bool = True
    """Score each halving round's candidates together (LogME per feature width and kNN in one
    ``poodle_vllm.ops`` call each: Triton on a GPU, torch elsewhere). False scores one model at a
    time with the numpy / faiss scorers; same ranking, kept for comparison and benchmarks."""
    score_device: str = "auto"
    """Device of the batched proxy scores: ``auto`` (the GPU when torch sees one), ``cpu``, ``cuda``."""
    max_latency_ms: float | None = None
    """Exclude models whose measured latency per item (batch 32, length 128) is above this
    (None = no limit). Models without a measurement pass. Off by default because latency
    measured on a shared 2-core CPU varied 3-8x with the other jobs' load; the default
    parameter limit below is the deterministic way to keep MPNet-base out."""
    max_parameters: int | None = 60_000_000
    """Exclude models with more encoder parameters than this. The default keeps MiniLM-sized
    models (17-23M) and excludes MPNet-base (110M, about 5x slower) and its 6-layer
    truncation (67M); they stay in the store."""
    include: list[str] | None = None
    """Only these model ids (after the other filters); None = all."""
    exclude: list[str] = field(default_factory=list)
    """Never these model ids."""
    kinds: list[str] | None = None
    """Only models of these kinds (``base``, ``finetuned``, ``truncated``, ``random``, ``variant``)."""
    round_sizes: list[int] = field(default_factory=lambda: [100, 250, 500])
    """Successive halving: sample sizes of the rounds (capped at the sample size)."""
    eta: float = 2.0
    """Keep the best 1/eta of the candidates after each round."""
    min_survivors: int = 3
    """Never keep fewer than this many candidates for the next round."""
    halving: bool = True
    """False = score every candidate on the full sample (exhaustive proxy search)."""
    cluster_prune: bool = False
    """Cluster candidates by fingerprint, score one representative per cluster first and drop
    the clusters whose representative scores low (for large stores)."""
    n_clusters: int = 0
    """Clusters for ``cluster_prune`` (0 = about sqrt(candidates) * 1.5)."""
    cluster_keep: float = 0.5
    """Share of clusters (by representative score) kept by ``cluster_prune``."""
    max_length: int = 64
    """Tokens per text for feature extraction."""
    batch_size: int = 32
    """Texts per forward pass."""
    use_cache: bool = True
    """Cache features on disk under the store's ``cache/features``."""
    share_layers: bool = True
    """Compute a truncated model's features from its parent's hidden states."""
    warm_start: bool = True
    """Look up past searches on similar tasks and protect their winners in the first round."""
    warm_start_min_similarity: float = 0.8
    """Cosine similarity of task embeddings above which a past task counts as similar."""
    save_result: bool = True
    """Keep the result (registry when available, else ``<store>/search_history.jsonl``)."""
    seed: int = 0
    """Seed for the sample order of the halving rounds."""
