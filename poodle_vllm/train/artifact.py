"""A surrogate on disk: a plain Hugging Face folder plus ``poodle.json``.

The folder loads with ``AutoModelForSequenceClassification`` and ``AutoTokenizer`` alone
(safetensors weights, ``id2label`` set), so nothing Poodle-specific is needed to inspect or reuse
a surrogate. ``poodle.json`` adds what serving needs: which task and template it answers, the
exact answer text and token ids to emit per label, the softmax temperature and max_length.

Versions live in ``surrogates/<task_id>/v<N>/``. Every write goes to a temporary sibling folder
that is renamed into place only when complete, so a crashed or failed training run never
leaves a half-written surrogate and never touches the previous version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poodle_vllm.types import LabelInfo, TaskTemplate

METADATA_FILE = "poodle.json"
FORMAT_VERSION = 1
_VERSION_DIR = re.compile(r"^v(\d+)$")


@dataclass
class SurrogateMetadata:
    """Contents of ``poodle.json``."""

    label_names: list[str]
    """Class index -> label, the same order as the model's ``id2label``."""
    task_id: str | None = None
    template_hash: str | None = None
    """:func:`template_hash` of the task's template: a surrogate never answers another template."""
    canonical_answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """label -> ``{"text": str, "token_ids": list[int]}``: the LLM's exact answer for that label."""
    base_model: str = ""
    training_items: int = 0
    validation_items: int = 0
    validation_agreement: float | None = None
    """Agreement with the training labels (the LLM's answers) on the held-out validation split."""
    calibration_temperature: float = 1.0
    max_length: int = 128
    training_time_s: float = 0.0
    created_at: float = field(default_factory=time.time)
    version: int | None = None
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else worth keeping (training arguments, data report, calibration NLLs, ...)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SurrogateMetadata:
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        extra = dict(known.pop("extra", {}) or {})
        # Keys written by a newer Poodle are kept, not dropped.
        extra.update({k: v for k, v in data.items() if k not in names})
        return cls(**known, extra=extra)


def template_hash(template: TaskTemplate) -> str:
    """Stable short hash of a template's token ids (prefix and suffix)."""
    payload = json.dumps([template.prefix_token_ids, template.suffix_token_ids]).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def canonical_answers_from_labels(labels: list[LabelInfo]) -> dict[str, dict[str, Any]]:
    return {li.label: {"text": li.canonical_text, "token_ids": list(li.canonical_token_ids)} for li in labels}


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished ``tmp`` folder to ``final``; an existing ``final`` is swapped out, then removed."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)


def write_artifact(
    output_dir: str | Path, write_model: Callable[[Path], None], metadata: SurrogateMetadata
) -> Path:
    """Write a surrogate folder atomically: ``write_model(tmp)`` saves model + tokenizer, then metadata."""
    final = Path(output_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        write_model(tmp)
        (tmp / METADATA_FILE).write_text(json.dumps(metadata.to_dict(), indent=2))
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def list_versions(root: str | Path, task_id: str) -> list[int]:
    """Complete versions of a task's surrogate, oldest first (temporary folders are ignored)."""
    task_dir = Path(root) / task_id
    if not task_dir.is_dir():
        return []
    versions = []
    for p in task_dir.iterdir():
        m = _VERSION_DIR.match(p.name)
        if m and (p / METADATA_FILE).exists():
            versions.append(int(m.group(1)))
    return sorted(versions)


def version_path(root: str | Path, task_id: str, version: int) -> Path:
    return Path(root) / task_id / f"v{version}"


def latest_version(root: str | Path, task_id: str) -> tuple[int, Path] | None:
    versions = list_versions(root, task_id)
    if not versions:
        return None
    return versions[-1], version_path(root, task_id, versions[-1])


def save_surrogate_version(
    root: str | Path,
    task_id: str,
    write_model: Callable[[Path], None],
    metadata: SurrogateMetadata,
    max_attempts: int = 5,
    min_version: int = 1,
) -> tuple[int, Path]:
    """Save as the next version ``root/<task_id>/v<N>``; returns ``(N, path)``.

    ``N`` is one past the highest existing folder, and at least ``min_version`` (pass the
    registry's next version so folder and registry numbers agree). The number is claimed with an
    atomic ``mkdir``, so two writers racing for the same N end with two distinct versions rather
    than one overwriting the other.
    """
    task_dir = Path(root) / task_id
    task_dir.mkdir(parents=True, exist_ok=True)
    tmp = task_dir / f".tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        write_model(tmp)
        for _ in range(max_attempts):
            existing = [int(m.group(1)) for p in task_dir.iterdir() if (m := _VERSION_DIR.match(p.name))]
            version = max(max(existing, default=0) + 1, min_version)
            metadata.version = version
            (tmp / METADATA_FILE).write_text(json.dumps(metadata.to_dict(), indent=2))
            final = version_path(root, task_id, version)
            try:
                # mkdir claims the name atomically; rename onto an empty folder then replaces it.
                final.mkdir()
            except FileExistsError:
                continue
            os.rename(tmp, final)
            return version, final
        raise RuntimeError(f"could not claim a version folder under {task_dir}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_metadata(path: str | Path) -> SurrogateMetadata:
    """Read ``poodle.json`` of a surrogate folder (clear error if it is not one)."""
    f = Path(path) / METADATA_FILE
    if not f.exists():
        raise FileNotFoundError(f"{path} is not a Poodle surrogate folder (no {METADATA_FILE})")
    try:
        data = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{f} is not valid JSON: {exc}") from exc
    return SurrogateMetadata.from_dict(data)
