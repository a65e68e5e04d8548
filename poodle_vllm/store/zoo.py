"""The zoo builder: derive candidates of mixed relevance from the prepared base encoders.

No PyPI package ships a BERT-class model already fine-tuned for a classification task, so the
store's task-tuned members are built here, each with its exact recipe in the catalog:

* **task-tuned**: sentiment (SST-2 train, minus every sentence that also occurs in
  rotten_tomatoes, matched after normalising case, whitespace, punctuation and PTB tokens) and
  topic (AG News) fine-tunes from more than one base, through ``poodle_vllm.train``'s trainer;
* **structural**: layer truncations (the first k layers of a parent, unchanged weights; lineage
  is recorded so the search reuses the parent's hidden states);
* **control**: a randomly initialised BERT with MiniLM-L6's configuration and tokenizer.

``build_variant_store`` makes a separate catalog of 50+ *virtual* variants (every truncation
depth x mean/CLS pooling of every real model) for the cluster-pruning experiment; they cost no
disk and, through lineage, one forward pass per real model.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from poodle_vllm.store.catalog import Catalog, ModelEntry
from poodle_vllm.store.importer import add_model, import_prepared, update_fingerprints

log = logging.getLogger(__name__)

Say = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# Data (with the SST-2 / rotten_tomatoes overlap removed)
# ---------------------------------------------------------------------------------------------
_PTB = {"-lrb-": "(", "-rrb-": ")", "-lsb-": "[", "-rsb-": "]", "``": '"', "''": '"'}


def normalise_sentence(text: str) -> str:
    """A match key robust to case, whitespace, punctuation and SST's PTB tokenization
    (``wo n't`` vs ``won't``, ``-lrb-`` vs ``(``): lower-case letters and digits only."""
    t = text.lower()
    for k, v in _PTB.items():
        t = t.replace(k, v)
    return re.sub(r"[^a-z0-9]+", "", t)


def sst2_without_rotten_tomatoes() -> tuple[list[str], list[str], dict[str, int]]:
    """SST-2 training sentences that do not occur in rotten_tomatoes, with gold labels."""
    from poodle_vllm.train.data import dataset_splits

    sst = dataset_splits("sst2")["train"]
    rt = dataset_splits("rotten_tomatoes")
    rt_keys = {normalise_sentence(t) for split in rt.values() for t, _ in split}
    names = ["negative", "positive"]
    kept = [(t, names[y]) for t, y in sst if normalise_sentence(t) not in rt_keys]
    report = {"sst2_train": len(sst), "removed_overlap": len(sst) - len(kept), "kept": len(kept)}
    return [t for t, _ in kept], [y for _, y in kept], report


def ag_news_items() -> tuple[list[str], list[str]]:
    from poodle_vllm.train.data import examples_from_dataset

    texts, labels, _ = examples_from_dataset("ag_news", split="train")
    return texts, labels


# ---------------------------------------------------------------------------------------------
# Variant makers
# ---------------------------------------------------------------------------------------------
def models_dir(catalog: Catalog) -> Path:
    return Path(catalog.root) / "models"


def materialize_truncation(
    catalog: Catalog, parent_id: str, k: int, new_id: str | None = None, measure: bool = True
) -> ModelEntry:
    """Write the first ``k`` layers of ``parent_id`` as an HF folder and add it with lineage."""
    from poodle_vllm.store.encoder import load_encoder

    root, layer = catalog.lineage_root(parent_id)
    depth = k if layer is None else min(k, layer)
    mid = new_id or f"{parent_id}-l{k}"
    out = models_dir(catalog) / mid
    enc = load_encoder(root.path)  # type: ignore[arg-type]
    if depth > enc.num_layers:
        raise ValueError(f"{parent_id} has {enc.num_layers} layers, cannot keep {k}")
    enc.model.encoder.layer = enc.model.encoder.layer[:depth]
    enc.model.config.num_hidden_layers = depth
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    enc.model.save_pretrained(str(tmp), safe_serialization=True)
    enc.tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    parent = catalog.get(parent_id)
    recipe = {"method": "layer-truncation", "parent": parent_id, "keep_layers": k,
              "note": "encoder.layer[:k] of the parent, embeddings and weights unchanged"}  # fmt: skip
    return add_model(
        catalog, out, model_id=mid, kind="truncated", overwrite=True, measure=measure, parent=parent_id, parent_layer=k,
        base_model=parent.base_model or parent_id, task_tags=list(parent.task_tags), source="derived by poodle",
        license=parent.license, recipe=recipe, pooling=parent.pooling,
    )  # fmt: skip


def make_random_control(
    catalog: Catalog, like_id: str, new_id: str = "random-bert-l6", seed: int = 0, measure: bool = True
) -> ModelEntry:
    """A randomly initialised encoder with ``like_id``'s config and tokenizer (lower-bound control)."""
    import torch
    from transformers import AutoConfig, AutoModel

    from poodle_vllm.train.heads import load_tokenizer

    like = catalog.get(like_id)
    assert like.path is not None
    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(like.path)
    model = AutoModel.from_config(config)
    out = models_dir(catalog) / new_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    load_tokenizer(like.path).save_pretrained(str(out))
    recipe = {"method": "random-init", "config_of": like_id, "seed": seed, "torch": torch.__version__}
    return add_model(
        catalog, out, model_id=new_id, kind="random", overwrite=True, measure=measure, base_model=like_id, task_tags=["none"],
        source="derived by poodle", license=like.license, recipe=recipe,
    )  # fmt: skip


def finetune_variant(
    catalog: Catalog,
    base_id: str,
    new_id: str,
    texts: list[str],
    labels: list[str],
    task_tag: str,
    data_recipe: dict[str, Any],
    args: Any,
) -> ModelEntry:
    """Fine-tune ``base_id`` with Poodle's trainer and add the encoder (head dropped at load)."""
    from poodle_vllm.train.trainer import SurrogateTrainer

    base = catalog.get(base_id)
    assert base.path is not None
    trainer = SurrogateTrainer(args)
    t0 = time.perf_counter()
    result = trainer.train(base.path, texts, labels)
    out = models_dir(catalog) / new_id
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    trainer.write_model(out)
    recipe = {
        "method": "fine-tune", "trainer": "poodle_vllm.train.trainer.SurrogateTrainer", "base": base_id,
        "task": task_tag, "data": data_recipe, "items": len(texts), "training_args": args.to_dict(),
        "val_accuracy": round(result.best_val_agreement, 4), "epochs_run": result.epochs_run,
        "train_time_s": round(time.perf_counter() - t0, 1), "labels": sorted(set(labels)),
    }  # fmt: skip
    return add_model(
        catalog, out, model_id=new_id, kind="finetuned", overwrite=True, base_model=base_id,
        task_tags=[task_tag], source="derived by poodle", license=base.license, recipe=recipe,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
def build_zoo(catalog: Catalog, quick: bool = False, say: Say = print, seed: int = 0) -> list[str]:
    """Import the prepared bases and derive the zoo; returns the ids added or rebuilt.

    Normal: four fine-tunes (sentiment and topic, each from two bases) of 1,500 items; ``quick``:
    two fine-tunes (sentiment from MiniLM-L6, topic from the SRE MiniLM) of 400 items. Both 1
    epoch at max_length 64. On a contended 2-core CPU a 1,500-item fine-tune took 15 minutes,
    a quick one about 5. Models already in the catalog are kept (a rerun resumes).
    """
    import random

    from poodle_vllm.train.args import TrainingArguments

    added = import_prepared(catalog)
    for m in added:
        say(f"imported {m}")
    have = set(catalog.ids())
    if "all-minilm-l6-v2" not in have:
        raise FileNotFoundError(
            "base model all-minilm-l6-v2 is not prepared; run the model preparation first"
        )
    n_items = 400 if quick else 1500
    args = TrainingArguments(
        max_length=64, epochs=1, batch_size=16, seed=seed, early_stopping_patience=0, calibrate=False
    )
    sst_t, sst_y, sst_report = sst2_without_rotten_tomatoes()
    ag_t, ag_y = ag_news_items()
    rng = random.Random(seed)
    sst_idx = rng.sample(range(len(sst_t)), min(n_items, len(sst_t)))
    ag_idx = rng.sample(range(len(ag_t)), min(n_items, len(ag_t)))
    sst = ([sst_t[i] for i in sst_idx], [sst_y[i] for i in sst_idx])
    ag = ([ag_t[i] for i in ag_idx], [ag_y[i] for i in ag_idx])
    sst_recipe = {"dataset": "sst2/stsa.binary.train", "overlap_removed_with": "rotten_tomatoes", **sst_report,
                  "sample": f"random {len(sst[0])} (seed {seed})"}  # fmt: skip
    ag_recipe = {
        "dataset": "ag_news (poodle_vllm.train.data split 'train')",
        "sample": f"random {len(ag[0])} (seed {seed})",
    }

    plan: list[tuple[str, Callable[[], ModelEntry]]] = []
    fine: list[tuple[str, str, tuple[list[str], list[str]], str, dict[str, Any]]] = [
        ("minilm-l6-sst2", "all-minilm-l6-v2", sst, "sentiment", sst_recipe),
        ("minilm-l3-sst2", "paraphrase-minilm-l3-v2", sst, "sentiment", sst_recipe),
        ("minilm-l6-agnews", "all-minilm-l6-v2", ag, "topic", ag_recipe),
        ("sre-minilm-l6-agnews", "sre-minilm-l6", ag, "topic", ag_recipe),
    ]
    if quick:  # one fine-tune per task, from two different bases
        fine = [f for f in fine if f[0] in ("minilm-l6-sst2", "sre-minilm-l6-agnews")]
    for mid, base, data, tag, rec in fine:
        if base in have:
            plan.append(
                (mid, partial(finetune_variant, catalog, base, mid, data[0], data[1], tag, rec, args))
            )
    truncs = [("all-minilm-l6-v2-l3", "all-minilm-l6-v2", 3), ("minilm-l6-sst2-l3", "minilm-l6-sst2", 3),
              ("all-mpnet-base-v2-l6", "all-mpnet-base-v2", 6)]  # fmt: skip
    for mid, parent, k in truncs:
        plan.append((mid, partial(materialize_truncation, catalog, parent, k, mid)))
    plan.append(
        ("random-bert-l6", partial(make_random_control, catalog, "all-minilm-l6-v2", "random-bert-l6", seed))
    )

    built: list[str] = list(added)
    for mid, maker in plan:
        if mid in catalog:
            continue
        try:
            t0 = time.perf_counter()
            maker()
            built.append(mid)
            say(f"built {mid} in {time.perf_counter() - t0:.0f}s")
        except (KeyError, FileNotFoundError) as exc:
            say(f"skipped {mid}: {exc}")
    t0 = time.perf_counter()
    done = update_fingerprints(catalog)
    say(f"fingerprinted {len(done)} models in {time.perf_counter() - t0:.0f}s")
    return built


def build_variant_store(
    source: Catalog,
    out_dir: str | Path,
    poolings: tuple[str, ...] = ("mean", "cls"),
    min_layer: int = 1,
    roots: list[str] | None = None,
) -> Catalog:
    """A catalog of the source's real models plus virtual truncations at every depth x pooling.

    Virtual variants keep their parent's latency as an upper bound. Feature caches are keyed by the real
    (root) model, so point the extractor at the source store's cache to share work.
    """
    out = Catalog(out_dir)
    real = [e for e in source.entries() if e.path and e.parent is None and (roots is None or e.id in roots)]
    for e in real:
        out.put(ModelEntry.from_dict(e.to_dict()), save=False)
    for e in real:
        for layer in range(min_layer, e.num_layers + 1):
            for pool in poolings:
                if layer == e.num_layers and pool == e.pooling:
                    continue  # that is the root itself
                v = ModelEntry.from_dict(e.to_dict())
                v.id = f"{e.id}@l{layer}-{pool}"
                v.path = None
                v.kind = "variant"
                v.parent, v.parent_layer = e.id, layer
                v.num_layers, v.pooling, v.size_bytes = layer, pool, 0
                # Unmeasured; the parent's latency is an upper bound, kept so constraints still apply.
                v.fingerprint = None
                v.recipe = {"method": "virtual truncation", "parent": e.id, "layer": layer, "pooling": pool,
                            "latency": "parent's measured latency (upper bound)"}  # fmt: skip
                out.put(v, save=False)
    out.save()
    return out
