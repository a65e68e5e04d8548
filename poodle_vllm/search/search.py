"""The model search: filter the store by constraints, score with proxies, rank.

``search_models(texts, labels, catalog=..., config=SearchConfig())`` returns a
:class:`SearchResult`, the object that crosses into training and the worker. It hides how the
ranking was reached (halving rounds, cluster pruning, cache hits) behind a ranked list of
:class:`CandidateScore` plus a time breakdown.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from poodle_vllm.search.batch_scores import score_candidates
from poodle_vllm.search.config import SearchConfig
from poodle_vllm.search.features import FeatureExtractor
from poodle_vllm.search.halving import HalvingRound, RoundScoreFn, combine_scores, successive_halving
from poodle_vllm.search.scorers import make_scorer
from poodle_vllm.store.catalog import Catalog, ModelEntry

log = logging.getLogger(__name__)

HISTORY_FILE = "search_history.jsonl"


@dataclass
class CandidateScore:
    """One model's place in the ranking."""

    model_id: str
    rank: int
    combined: float
    """Combined z-score in the last round this model took part in (comparable within a round)."""
    scores: dict[str, float]
    """Raw proxy scores of that round."""
    predicted_accuracy: float | None
    """Frozen-feature accuracy (linear probe, else kNN) on the last round's items; fine-tuning
    usually adds a few points on top."""
    rounds_survived: int
    n_items: int
    """Items the last scores were computed on."""
    num_parameters: int = 0
    latency_ms_128: float | None = None


@dataclass
class SearchResult:
    """The ranked candidates of one search, with the time breakdown and what was excluded."""

    ranking: list[CandidateScore]
    excluded: dict[str, str]
    """model id -> why the constraints excluded it."""
    timing: dict[str, float]
    """Seconds: ``load``, ``inference``, ``scoring`` (and ``scoring_<scorer>`` for each scorer),
    ``cluster_prune``, ``total``."""
    rounds: list[dict[str, Any]] = field(default_factory=list)
    clusters: dict[str, int] | None = None
    pruned_by_cluster: list[str] = field(default_factory=list)
    warm_start_from: list[str] = field(default_factory=list)
    """Winners of similar past tasks that were protected in the first round."""
    n_items: int = 0
    n_labels: int = 0
    task_name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    per_model_timing: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def best(self) -> str | None:
        return self.ranking[0].model_id if self.ranking else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
def filter_candidates(catalog: Catalog, config: SearchConfig) -> tuple[list[ModelEntry], dict[str, str]]:
    """Apply the metadata constraints; return (candidates, {excluded id: reason})."""
    keep: list[ModelEntry] = []
    excluded: dict[str, str] = {}
    for e in catalog.entries():
        reason = None
        if e.id in config.exclude:
            reason = "excluded by name"
        elif config.include is not None and e.id not in config.include:
            reason = "not in include list"
        elif config.kinds is not None and e.kind not in config.kinds:
            reason = f"kind {e.kind} not in {config.kinds}"
        elif config.max_parameters is not None and e.num_parameters > config.max_parameters:
            reason = f"{e.num_parameters / 1e6:.1f}M parameters > {config.max_parameters / 1e6:.1f}M"
        elif (
            config.max_latency_ms is not None
            and e.latency_ms_128 is not None
            and e.latency_ms_128 > config.max_latency_ms
        ):
            reason = f"latency {e.latency_ms_128:.1f} ms/item > {config.max_latency_ms:.1f} ms"
        if reason:
            excluded[e.id] = reason
        else:
            keep.append(e)
    return keep, excluded


def stratified_order(labels: list[Any], seed: int = 0) -> np.ndarray:
    """A permutation whose every prefix has (nearly) the label proportions of the whole sample."""
    rng = np.random.default_rng(seed)
    y = np.asarray([str(v) for v in labels])
    groups = {c: rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)}
    n = len(y)
    # Interleave by each item's fractional position within its class.
    keys = np.empty(n)
    for idx in groups.values():
        keys[idx] = (np.arange(len(idx)) + rng.random(len(idx))) / len(idx)
    return np.argsort(keys, kind="stable")


def _reference_model(catalog: Catalog) -> ModelEntry | None:
    bases = [e for e in catalog.entries() if e.kind == "base" and e.path]
    for e in bases:
        if e.id == "all-minilm-l6-v2":
            return e
    return min(bases, key=lambda e: e.num_parameters) if bases else None


def _task_embedding(extractor: FeatureExtractor, ref: ModelEntry, texts: list[str]) -> np.ndarray:
    v = extractor.features(ref.id, texts[:100]).mean(axis=0).astype(np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _past_winners(
    history: Path, ref_id: str, emb: np.ndarray, n_labels: int, min_sim: float
) -> list[tuple[str, float]]:
    if not history.exists():
        return []
    out: list[tuple[str, float]] = []
    for line in history.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("reference_model") != ref_id or rec.get("n_labels") != n_labels or not rec.get("winners"):
            continue
        sim = float(np.dot(emb, np.asarray(rec["task_embedding"], dtype=np.float64)))
        if sim >= min_sim:
            out.extend((w, sim) for w in rec["winners"][:2])
    out.sort(key=lambda t: -t[1])
    return out


def save_search_result(
    catalog: Catalog,
    result: SearchResult,
    task_embedding: np.ndarray | None,
    ref_id: str | None,
    task_id: str | None = None,
) -> None:
    """Append the result to ``<store>/search_history.jsonl`` and, when a task id and the
    registry exist, to the registry as well."""
    rec = {
        "time": time.time(),
        "task_name": result.task_name,
        "task_id": task_id,
        "n_items": result.n_items,
        "n_labels": result.n_labels,
        "reference_model": ref_id,
        "task_embedding": None if task_embedding is None else [round(float(x), 6) for x in task_embedding],
        "winners": [c.model_id for c in result.ranking[:3]],
        "ranking": [(c.model_id, round(c.combined, 4), c.predicted_accuracy) for c in result.ranking],
        "timing": result.timing,
    }
    path = Path(catalog.root) / HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    if task_id is None:
        return
    try:
        from poodle_vllm.core.registry import Registry
        from poodle_vllm.paths import resolve_paths

        reg = Registry(resolve_paths().registry)
        signature = {
            "n_labels": result.n_labels,
            "reference_model": ref_id,
            "task_embedding": rec["task_embedding"],
        }
        reg.save_search_result(task_id, [dataclasses.asdict(c) for c in result.ranking], signature)
    except Exception as exc:  # noqa: BLE001 - the JSON history above is the record of truth
        log.info("search result not saved to the registry: %s", exc)


# ---------------------------------------------------------------------------------------------
def search_models(
    texts: list[str],
    labels: list[Any],
    catalog: Catalog,
    config: SearchConfig | None = None,
    extractor: FeatureExtractor | None = None,
    task_name: str = "",
    task_id: str | None = None,
) -> SearchResult:
    """Rank the store's models for the labelled sample ``(texts, labels)``."""
    cfg = config or SearchConfig()
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if len(set(map(str, labels))) < 2:
        raise ValueError("a search needs at least two distinct labels")
    t_start = time.perf_counter()
    ext = extractor or FeatureExtractor(
        catalog,
        max_length=cfg.max_length,
        batch_size=cfg.batch_size,
        use_cache=cfg.use_cache,
        share_layers=cfg.share_layers,
    )
    base_timing = ext.total_timing()
    order = stratified_order(labels, cfg.seed)
    texts_o = [texts[i] for i in order]
    y_o = np.asarray([str(labels[i]) for i in order])
    n = len(texts_o)
    sizes = sorted({min(n, s) for s in cfg.round_sizes if s > 0} | ({n} if not cfg.round_sizes else set()))
    if not cfg.halving:
        sizes = [sizes[-1]]
    for name in cfg.scorers:
        make_scorer(name)  # fail before any model runs on an unknown scorer name
    scorer_s: dict[str, float] = {}
    last_scores: dict[tuple[str, int], dict[str, float]] = {}

    def score_round(model_ids: list[str], size: int) -> dict[str, dict[str, float]]:
        # Features of every candidate first (each model runs once), then each scorer over all
        # of them at once: batched LogME / kNN go through ops dispatch (Triton on a GPU).
        todo = [m for m in dict.fromkeys(model_ids) if (m, size) not in last_scores]
        if todo:
            feats = ext.features_many(todo, texts_o[:size])
            scored = score_candidates(
                feats, y_o[:size], cfg.scorers, cfg.batched_scoring, cfg.score_device, scorer_s
            )
            last_scores.update({(m, size): scored[m] for m in todo})
        return {m: last_scores[(m, size)] for m in model_ids}

    candidates, excluded = filter_candidates(catalog, cfg)
    cand_ids = [e.id for e in candidates]
    if not cand_ids:
        raise ValueError(f"no model in the store passes the constraints ({len(excluded)} excluded)")

    # Warm start from similar past tasks.
    ref = _reference_model(catalog)
    task_emb = None
    warm: list[str] = []
    if ref is not None and (cfg.warm_start or cfg.save_result):
        task_emb = _task_embedding(ext, ref, texts_o)
        if cfg.warm_start:
            past = _past_winners(
                Path(catalog.root) / HISTORY_FILE,
                ref.id,
                task_emb,
                len(set(y_o)),
                cfg.warm_start_min_similarity,
            )
            warm = list(dict.fromkeys(m for m, _ in past if m in cand_ids))
    # Start with the past winners so a cut-short search has scored them.
    cand_ids = warm + [m for m in cand_ids if m not in warm]

    clusters = None
    pruned: list[str] = []
    t_cluster = time.perf_counter()
    if cfg.cluster_prune and len(cand_ids) > 3:
        cand_ids, clusters, pruned = _prune_by_cluster(catalog, cand_ids, cfg, sizes[0], score_round, warm)
    cluster_s = time.perf_counter() - t_cluster

    ranking_ids, rounds = successive_halving(cand_ids, sizes, score_round, cfg.eta, cfg.min_survivors, warm)
    result = _build_result(catalog, ranking_ids, rounds, excluded, sizes)
    used = ext.total_timing()
    result.timing = {
        "load": round(used.load_s - base_timing.load_s, 3),
        "inference": round(used.inference_s - base_timing.inference_s, 3),
        "scoring": round(sum(scorer_s.values()), 3),
        **{f"scoring_{name}": round(sec, 3) for name, sec in scorer_s.items()},
        "cluster_prune": round(cluster_s, 3),
        "total": round(time.perf_counter() - t_start, 3),
    }
    result.per_model_timing = {m: dataclasses.asdict(t) for m, t in ext.timings.items()}
    result.clusters = clusters
    result.pruned_by_cluster = pruned
    result.warm_start_from = warm
    result.n_items = n
    result.n_labels = len(set(y_o))
    result.task_name = task_name
    result.config = dataclasses.asdict(cfg)
    if cfg.save_result:
        save_search_result(catalog, result, task_emb, ref.id if ref else None, task_id)
    return result


def _prune_by_cluster(
    catalog: Catalog,
    cand_ids: list[str],
    cfg: SearchConfig,
    size: int,
    score_round: RoundScoreFn,
    protected: list[str],
) -> tuple[list[str], dict[str, int], list[str]]:
    """Score one representative per fingerprint cluster; keep the best clusters' members."""
    from poodle_vllm.store.fingerprint import FingerprintIndex

    entries = [catalog.get(m) for m in cand_ids]
    index = FingerprintIndex.from_entries(entries)
    k = cfg.n_clusters or max(2, round(1.5 * math.sqrt(len(index.ids))))
    clusters = index.cluster(k, seed=cfg.seed)
    next_c = max(clusters.values(), default=-1) + 1
    for m in cand_ids:  # models without a fingerprint form their own clusters
        if m not in clusters:
            clusters[m] = next_c
            next_c += 1
    reps = index.representatives({m: c for m, c in clusters.items() if m in index.ids})
    for m, c in clusters.items():
        reps.setdefault(c, m)
    rep_scores = score_round(list(dict.fromkeys(reps.values())), size)
    combined = combine_scores(rep_scores)
    ranked = sorted(reps, key=lambda c: -combined[reps[c]])
    keep_c = set(ranked[: max(1, math.ceil(len(ranked) * cfg.cluster_keep))])
    kept = [m for m in cand_ids if clusters[m] in keep_c or m in protected]
    pruned = [m for m in cand_ids if m not in kept]
    return kept, clusters, pruned


def _build_result(
    catalog: Catalog,
    ranking_ids: list[str],
    rounds: list[HalvingRound],
    excluded: dict[str, str],
    sizes: list[int],
) -> SearchResult:
    ranking: list[CandidateScore] = []
    for rank, m in enumerate(ranking_ids, start=1):
        last_r = max(i for i, r in enumerate(rounds) if m in r.candidates)
        rnd = rounds[last_r]
        sc = rnd.scores[m]
        pred = sc.get("linear", sc.get("knn"))
        e = catalog.get(m)
        ranking.append(
            CandidateScore(
                model_id=m, rank=rank, combined=round(float(rnd.combined[m]), 4),
                scores={k: round(v, 5) for k, v in sc.items()},
                predicted_accuracy=None if pred is None else round(pred, 4),
                rounds_survived=last_r + 1, n_items=rnd.size,
                num_parameters=e.num_parameters, latency_ms_128=e.latency_ms_128,
            )
        )  # fmt: skip
    rounds_out = [
        {"size": r.size, "candidates": r.candidates, "kept": r.kept,
         "combined": {m: round(v, 4) for m, v in r.combined.items()}}
        for r in rounds
    ]  # fmt: skip
    return SearchResult(ranking=ranking, excluded=excluded, timing={}, rounds=rounds_out)
