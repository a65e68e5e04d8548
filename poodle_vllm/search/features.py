"""Cached feature extraction with shared-layer reuse.

Feature extraction dominates a model search, so three things keep it cheap:

* **each model is loaded once** per search and kept while the search runs (``max_loaded``);
* **features are cached on disk** by (weights, sequence length, layer, pooling, text hash)
  under ``<store>/cache/features``; a repeated search, a later halving round or the fingerprint
  of the same model never recomputes a text;
* **lineage sharing**: a truncated model's output *is* an intermediate hidden state of its
  parent, so one forward pass of the parent with ``output_hidden_states`` caches every layer
  (mean and CLS pooled) and all truncations and pooling variants of that parent are cache hits.

What :class:`FeatureExtractor` hides: which model actually ran, the cache layout and shard
files. Callers ask for ``features(model_id, texts)`` and get an ``(n, d)`` float32 array.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poodle_vllm.store.catalog import Catalog, ModelEntry


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


@dataclass
class ModelTiming:
    """Where one model's feature time went during a search."""

    load_s: float = 0.0
    inference_s: float = 0.0
    texts_computed: int = 0
    texts_cached: int = 0


class FeatureCache:
    """Pooled hidden states of every layer, in append-only ``.npz`` shards per (weights, length).

    A shard holds ``hashes`` (n) and ``mean``/``cls`` arrays (layers, n, d). Shards are never
    rewritten, so concurrent writers only ever add files (named by pid and time).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        # key -> (hash -> (layers_mean, layers_cls)) loaded lazily
        self._mem: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}

    def _load(self, key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if key in self._mem:
            return self._mem[key]
        table: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        folder = self.root / key
        for shard in sorted(folder.glob("*.npz")) if folder.exists() else []:
            try:
                with np.load(shard) as data:
                    hashes, mean, cls = data["hashes"], data["mean"], data["cls"]
            except (OSError, ValueError, KeyError):
                continue  # a shard cut short by a crash is simply ignored
            for j, h in enumerate(hashes):
                table[str(h)] = (mean[:, j], cls[:, j])
        self._mem[key] = table
        return table

    def get(self, key: str, hashes: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        table = self._load(key)
        return {h: table[h] for h in hashes if h in table}

    def put(self, key: str, hashes: list[str], mean: np.ndarray, cls: np.ndarray) -> None:
        table = self._load(key)
        for j, h in enumerate(hashes):
            table[h] = (mean[:, j], cls[:, j])
        folder = self.root / key
        folder.mkdir(parents=True, exist_ok=True)
        name = folder / f"shard-{time.time_ns()}-{os.getpid()}.npz"
        tmp = name.with_suffix(".tmp.npz")
        np.savez(tmp, hashes=np.array(hashes), mean=mean, cls=cls)
        os.replace(tmp, name)


class FeatureExtractor:
    """``features(model_id, texts)`` for catalog models, with caching and lineage reuse."""

    def __init__(
        self,
        catalog: Catalog,
        cache_dir: str | os.PathLike[str] | None = None,
        max_length: int = 64,
        batch_size: int = 32,
        use_cache: bool = True,
        share_layers: bool = True,
        max_loaded: int = 16,
    ) -> None:
        self.catalog = catalog
        self.cache = (
            FeatureCache(cache_dir or Path(catalog.root) / "cache" / "features") if use_cache else None
        )
        self.max_length = max_length
        self.batch_size = batch_size
        self.share_layers = share_layers
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, object] = OrderedDict()
        self._nocache: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        self.timings: dict[str, ModelTiming] = {}

    # -- lineage -------------------------------------------------------------------------------
    def source_of(self, model_id: str) -> tuple[ModelEntry, int | None]:
        """The model that actually runs for ``model_id`` and the hidden-state index to read."""
        entry = self.catalog.get(model_id)
        if self.share_layers or entry.path is None:
            return self.catalog.lineage_root(model_id)
        return entry, None

    def cache_key(self, entry: ModelEntry) -> str:
        sha = entry.weights_sha or "nosha"
        return f"{entry.id}-{sha}/len{self.max_length}"

    # -- public --------------------------------------------------------------------------------
    def features(self, model_id: str, texts: list[str]) -> np.ndarray:
        """``(len(texts), hidden)`` float32 pooled features of ``model_id`` (its own pooling)."""
        entry = self.catalog.get(model_id)
        root, layer = self.source_of(model_id)
        timing = self.timings.setdefault(model_id, ModelTiming())
        key = self.cache_key(root)
        hashes = [text_hash(t) for t in texts]
        found = self._lookup(key, hashes)
        missing = list(dict.fromkeys(h for h in hashes if h not in found))
        timing.texts_cached += len(hashes) - len(missing)
        if missing:
            first = {h: t for t, h in zip(texts, hashes, strict=False)}
            new_texts = [first[h] for h in missing]
            from poodle_vllm.store.encoder import pooled_hidden_states

            enc = self._encoder(root, timing)
            t0 = time.perf_counter()
            pooled = pooled_hidden_states(enc, new_texts, self.max_length, self.batch_size)  # type: ignore[arg-type]
            timing.inference_s += time.perf_counter() - t0
            timing.texts_computed += len(missing)
            self._store(key, missing, pooled["mean"], pooled["cls"])
            for j, h in enumerate(missing):
                found[h] = (pooled["mean"][:, j], pooled["cls"][:, j])
        pick = 0 if entry.pooling == "mean" else 1
        idx = -1 if layer is None else layer
        return np.stack([found[h][pick][idx] for h in hashes]).astype(np.float32, copy=False)

    def features_many(self, model_ids: list[str], texts: list[str]) -> dict[str, np.ndarray]:
        """``{model_id: features(model_id, texts)}`` for a whole halving round.

        Candidates are visited grouped by the model that actually runs (their lineage root), so
        each root is loaded and run once for the round and its truncations / pooling variants
        are then cache hits; the result keeps the order of ``model_ids``.
        """
        roots = {m: self.source_of(m)[0].id for m in model_ids}
        first_seen = {r: i for i, r in reversed(list(enumerate(roots[m] for m in model_ids)))}
        visit = sorted(model_ids, key=lambda m: first_seen[roots[m]])
        got = {m: self.features(m, texts) for m in visit}
        return {m: got[m] for m in model_ids}

    def release(self, model_id: str | None = None) -> None:
        """Drop loaded models (all, or the root of ``model_id``) to free memory."""
        if model_id is None:
            self._loaded.clear()
            return
        root, _ = self.source_of(model_id)
        self._loaded.pop(root.id, None)

    def total_timing(self) -> ModelTiming:
        total = ModelTiming()
        for t in self.timings.values():
            total.load_s += t.load_s
            total.inference_s += t.inference_s
            total.texts_computed += t.texts_computed
            total.texts_cached += t.texts_cached
        return total

    # -- internals -----------------------------------------------------------------------------
    def _lookup(self, key: str, hashes: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self.cache is not None:
            return self.cache.get(key, hashes)
        table = self._nocache.setdefault(key, {})
        return {h: table[h] for h in hashes if h in table}

    def _store(self, key: str, hashes: list[str], mean: np.ndarray, cls: np.ndarray) -> None:
        if self.cache is not None:
            self.cache.put(key, hashes, mean, cls)
        else:
            table = self._nocache.setdefault(key, {})
            for j, h in enumerate(hashes):
                table[h] = (mean[:, j], cls[:, j])

    def _encoder(self, root: ModelEntry, timing: ModelTiming) -> object:
        if root.id in self._loaded:
            self._loaded.move_to_end(root.id)
            return self._loaded[root.id]
        from poodle_vllm.store.encoder import load_encoder

        assert root.path is not None
        enc = load_encoder(root.path)
        timing.load_s += enc.load_s
        self._loaded[root.id] = enc
        while len(self._loaded) > self.max_loaded:
            self._loaded.popitem(last=False)
        return enc
