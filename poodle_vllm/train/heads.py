"""Build, load and save surrogate classifiers with either head (mean pooling or BERT's CLS).

``modeling.py`` holds the mean-pooling classes themselves and stays free of Poodle imports (it
is copied into every saved folder); this module is Poodle's side: which class to build for a
base model, how to load any saved folder without ``trust_remote_code``, and how to make a saved
folder loadable by plain transformers.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

POOLINGS = ("mean", "cls")


def _read_config(folder: Path) -> dict[str, Any]:
    cfg_file = folder / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"model folder {folder} has no config.json")
    try:
        data = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg_file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{cfg_file} does not hold a JSON object")
    return data


def load_tokenizer(folder: str | os.PathLike[str]) -> Any:
    """``AutoTokenizer`` for any model folder, Poodle's own included, without running remote code.

    AutoTokenizer reads the folder's config first; for a mean-pooling surrogate that config's
    class lives in the folder's code, and transformers would ask (interactively) whether to run it.
    The tokenizer does not need it, so refuse and let transformers fall back to the plain config.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)


def mean_pool_class(model_type: str) -> Any:
    """The mean-pooling classifier class for an encoder type (None: not supported)."""
    from poodle_vllm.train import modeling

    return modeling.MEAN_POOL_CLASSES.get(model_type)


def saved_head_class(folder: str | os.PathLike[str]) -> Any:
    """Poodle's mean-pooling class a saved folder was written with, or None for other heads."""
    from poodle_vllm.train import modeling

    archs = _read_config(Path(folder)).get("architectures") or []
    by_name = {cls.__name__: cls for cls in modeling.MEAN_POOL_CLASSES.values()}
    return next((by_name[a] for a in archs if a in by_name), None)


def build_classifier(base_dir: str | Path, label_names: Sequence[str], pooling: str = "mean") -> Any:
    """A classifier over ``base_dir``'s encoder with a fresh head for ``label_names``.

    ``mean`` uses Poodle's mean-pooling head where the encoder type has one (BERT, MiniLM,
    MPNet) and falls back to the standard head otherwise; ``cls`` is transformers' own
    ``AutoModelForSequenceClassification`` (pooler over the first token).
    """
    from transformers import AutoModelForSequenceClassification

    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    base_dir = Path(base_dir)
    names = list(label_names)
    kwargs = {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
        "ignore_mismatched_sizes": True,
    }
    model_type = str(_read_config(base_dir).get("model_type", ""))
    cls = mean_pool_class(model_type)
    if cls is not None and (pooling == "mean" or saved_head_class(base_dir) is not None):
        # The base's own config, re-typed as the mean-pooling config (weights load unchanged).
        labels = {k: kwargs[k] for k in ("num_labels", "id2label", "label2id")}
        config = cls.config_class.from_pretrained(base_dir, **labels)
        return cls.from_pretrained(base_dir, config=config, ignore_mismatched_sizes=True)
    return AutoModelForSequenceClassification.from_pretrained(base_dir, **kwargs)


def load_classifier(folder: str | Path) -> Any:
    """Load a saved classifier folder with the class it was saved with (no remote code run)."""
    from transformers import AutoModelForSequenceClassification

    cls = saved_head_class(folder)
    if cls is not None:
        return cls.from_pretrained(folder)  # type: ignore[attr-defined]
    return AutoModelForSequenceClassification.from_pretrained(folder)


def uses_mean_pooling(model: Any) -> bool:
    """Whether ``model`` is one of Poodle's mean-pooling classifiers."""
    from poodle_vllm.train import modeling

    return isinstance(model, tuple(modeling.MEAN_POOL_CLASSES.values()))


def save_classifier(model: Any, folder: str | Path) -> None:
    """``save_pretrained`` plus, for a mean-pooling model, the code and ``auto_map`` that let
    ``AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)`` load it."""
    from poodle_vllm.train import modeling

    folder = Path(folder)
    if uses_mean_pooling(model):
        stem = Path(modeling.MODELING_FILE).stem
        model.config.auto_map = {
            "AutoConfig": f"{stem}.{type(model.config).__name__}",
            "AutoModelForSequenceClassification": f"{stem}.{type(model).__name__}",
        }
    model.save_pretrained(folder, safe_serialization=True)
    if uses_mean_pooling(model):
        shutil.copyfile(modeling.__file__, folder / modeling.MODELING_FILE)


def load_encoder_of_classifier(folder: str | os.PathLike[str]) -> Any | None:
    """The bare encoder of a saved mean-pooling classifier with a plain encoder config (``bert``,
    ``mpnet``), for feature extraction and layer truncation; None for any other folder."""
    from transformers import BertConfig, MPNetConfig

    cls = saved_head_class(folder)
    if cls is None:
        return None
    clf = cls.from_pretrained(folder)  # type: ignore[attr-defined]
    encoder = clf.base_model
    plain = {
        k: v for k, v in clf.config.to_dict().items() if k not in ("auto_map", "architectures", "model_type")
    }
    encoder.config = (MPNetConfig if "mpnet" in clf.config.model_type else BertConfig)(**plain)
    return encoder
