"""Training data for a surrogate: the LLM's own answers from the Arrow log, or gold labels.

The log gives ``(slot_text, label)`` pairs the LLM produced. Only answers that can teach a
surrogate are kept: the LLM answered (not a surrogate), the request was eligible (greedy enough
sampling, a parseable answer) and the label lies in the task's label space. The same slot text
seen several times is kept once with its majority label, so a hot item cannot dominate training.

The public datasets under ``paths.data_dir()`` come with fixed, seeded splits so every
experiment (tests, benchmarks, the labelling script) sees the same train and test items.
"""

from __future__ import annotations

import csv
import logging
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from poodle_vllm.paths import data_dir
from poodle_vllm.types import RequestRecord, ServedBy

logger = logging.getLogger(__name__)

SPLIT_SEED = 20240601
"""Seed of the fixed dataset shuffles; changing it changes every benchmark's train/test split."""

DATASET_LABELS: dict[str, list[str]] = {
    "imdb": ["negative", "positive"],
    "rotten_tomatoes": ["negative", "positive"],
    "sst2": ["negative", "positive"],
    "ag_news": ["World", "Sports", "Business", "Sci/Tech"],
}
"""Label names per dataset, index = the dataset's integer label (ag_news: class index - 1)."""

# Held-out test items per dataset; the rest of the (shuffled) file is the training pool.
_TEST_SIZE = {"imdb": 1000, "rotten_tomatoes": 2000, "ag_news": 1600}
_MAX_TRAIN = {"imdb": 4000}


@dataclass
class DataReport:
    """What :func:`load_task_examples` kept and why it dropped the rest."""

    records_read: int = 0
    task_records: int = 0
    """Records of this task (any server, any eligibility)."""
    not_llm: int = 0
    """Answered by a surrogate: never used as training labels."""
    ineligible: int = 0
    """The engine hook marked them ineligible (sampling too random, structured output, ...)."""
    unparseable: int = 0
    """No label could be read from the answer."""
    outside_space: int = 0
    """A label outside the task's label space."""
    missing_text: int = 0
    """No slot text recorded."""
    duplicates_merged: int = 0
    """Records folded into an earlier record with the same slot text."""
    conflicting_texts: int = 0
    """Distinct slot texts whose repeated answers disagreed (majority label kept)."""
    kept: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    log_errors: list[str] = field(default_factory=list)
    """Problems reading the log (corrupt or truncated files); records read before them are kept."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _label_lookup(label_space: Sequence[str]) -> dict[str, str]:
    """Exact names first, then case/whitespace-insensitive aliases mapping to the canonical name."""
    lookup: dict[str, str] = {}
    for name in label_space:
        lookup.setdefault(name.strip().casefold(), name)
    return lookup


def examples_from_records(
    records: Iterable[RequestRecord], task_id: str, label_space: Sequence[str]
) -> tuple[list[str], list[str], DataReport]:
    """Filter and deduplicate log records into ``(texts, labels, report)``; see the module docstring."""
    if not label_space:
        raise ValueError("label_space is empty: the task has no induced labels yet")
    lookup = _label_lookup(label_space)
    report = DataReport()
    votes: dict[str, Counter[str]] = {}
    for rec in records:
        report.records_read += 1
        if rec.task_id != task_id:
            continue
        report.task_records += 1
        if rec.served_by != ServedBy.LLM.value:
            report.not_llm += 1
            continue
        if rec.eligible is not True:
            report.ineligible += 1
            continue
        if rec.label is None or not str(rec.label).strip():
            report.unparseable += 1
            continue
        label = lookup.get(str(rec.label).strip().casefold())
        if label is None:
            report.outside_space += 1
            continue
        if not rec.slot_text:
            report.missing_text += 1
            continue
        bucket = votes.setdefault(rec.slot_text, Counter())
        if bucket:
            report.duplicates_merged += 1
        bucket[label] += 1
    texts: list[str] = []
    labels: list[str] = []
    for text, bucket in votes.items():
        if len(bucket) > 1:
            report.conflicting_texts += 1
        texts.append(text)
        # most_common breaks ties by first occurrence: deterministic for a given log.
        labels.append(bucket.most_common(1)[0][0])
    report.kept = len(texts)
    report.label_counts = dict(Counter(labels))
    return texts, labels, report


def load_task_examples(
    log_dir: str | Path, task_id: str, label_space: Sequence[str]
) -> tuple[list[str], list[str], DataReport]:
    """Training examples of one task from the Arrow request log under ``log_dir``.

    The log reader skips torn tails and corrupt files without losing other rows; what it skipped
    is listed in ``report.log_errors`` (and logged). If the log cannot be read at all,
    ``ValueError`` says why; a missing folder raises ``FileNotFoundError``.
    """
    from poodle_vllm.arrowlog import ReadReport, iter_records

    log_dir = Path(log_dir)
    if not log_dir.exists():
        raise FileNotFoundError(f"request log {log_dir} does not exist (has the server logged anything?)")
    read_report = ReadReport()
    records: list[RequestRecord] = []
    try:
        for rec in iter_records(log_dir, report=read_report):
            records.append(rec)
    except Exception as exc:  # the reader is tolerant; anything left is a real failure
        msg = f"request log under {log_dir} could not be read after {len(records)} records: {exc}"
        if not records:
            raise ValueError(msg) from exc
        logger.warning("%s; using the records read so far", msg)
        read_report.corrupt_files["<reader>"] = str(exc)
    errors = [f"{path}: torn tail skipped (file cut short)" for path in read_report.torn_files]
    errors += [f"{path}: skipped ({why})" for path, why in read_report.corrupt_files.items()]
    for err in errors:
        logger.warning("request log: %s", err)
    if read_report.files and not records and read_report.corrupt_files:
        raise ValueError(
            f"no readable records in {log_dir}: {len(read_report.corrupt_files)} of {read_report.files} "
            f"file(s) are corrupt ({'; '.join(errors[:3])})"
        )
    texts, labels, report = examples_from_records(records, task_id, label_space)
    report.log_errors = errors
    return texts, labels, report


# --------------------------------------------------------------------------- public datasets


def _read_tsv(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(1 << 27)
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _load_raw(name: str, root: Path) -> dict[str, list[tuple[str, int]]]:
    """All items of a dataset as ``{split: [(text, label_index)]}`` before the seeded split."""
    if name == "imdb":
        rows = _read_tsv(root / "imdb" / "imdb_test_5k_part1.tsv") + _read_tsv(
            root / "imdb" / "imdb_test_5k_part2.tsv"
        )
        return {"all": [(r["text"].replace("<br />", " "), int(r["label"])) for r in rows]}
    if name == "rotten_tomatoes":
        rows = _read_tsv(root / "rotten_tomatoes" / "rt_polarity.tsv")
        return {"all": [(r["text"], int(r["label"])) for r in rows]}
    if name == "ag_news":
        with open(root / "ag_news" / "test.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        return {
            "all": [
                (f"{r['Title']}. {r['Description']}".replace("\\", " "), int(r["Class Index"]) - 1)
                for r in rows
            ]
        }
    if name == "sst2":
        out: dict[str, list[tuple[str, int]]] = {}
        for split, fname in (("train", "train"), ("validation", "dev"), ("test", "test")):
            items = []
            with open(root / "sst2" / f"stsa.binary.{fname}", encoding="utf-8") as fh:
                for line in fh:
                    line = line.strip()
                    if line:
                        items.append((line[2:], int(line[0])))
            out[split] = items
        return out
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASET_LABELS)}")


def dataset_splits(name: str) -> dict[str, list[tuple[str, int]]]:
    """The fixed splits of a dataset: ``train`` and ``test`` (sst2 also ``validation``)."""
    root = data_dir()
    if not root.exists():
        raise FileNotFoundError(f"data folder {root} not found; set POODLE_DATA_DIR")
    raw = _load_raw(name, root)
    if "all" not in raw:
        return raw
    # Exact duplicate texts (IMDB has a few) would leak between train and test: keep the first.
    seen: set[str] = set()
    items = []
    for text, y in raw["all"]:
        if text not in seen:
            seen.add(text)
            items.append((text, y))
    random.Random(SPLIT_SEED).shuffle(items)
    n_test = _TEST_SIZE[name]
    test, train = items[:n_test], items[n_test:]
    if name in _MAX_TRAIN:
        train = train[: _MAX_TRAIN[name]]
    return {"train": train, "test": test}


def examples_from_dataset(
    name: str, n: int | None = None, split: str = "train"
) -> tuple[list[str], list[str], list[str]]:
    """Gold-labelled ``(texts, labels, label_names)`` from a public dataset's fixed split.

    ``n`` takes the first ``n`` items of the (already shuffled) split, so smaller training sets
    are subsets of larger ones, which keeps learning curves comparable.
    IMDB: at most 4,000 training items and a fixed 1,000-item test split.
    """
    splits = dataset_splits(name)
    if split not in splits:
        raise ValueError(f"dataset {name!r} has splits {sorted(splits)}, not {split!r}")
    items = splits[split]
    if n is not None:
        if n > len(items):
            raise ValueError(f"{name}/{split} has {len(items)} items, {n} requested")
        items = items[:n]
    names = DATASET_LABELS[name]
    return [t for t, _ in items], [names[y] for _, y in items], list(names)


def stratified_split(labels: Sequence[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)`` with each label represented in both in proportion (>= 1 each)."""
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by_label.setdefault(y, []).append(i)
    train: list[int] = []
    val: list[int] = []
    for y in sorted(by_label):
        idx = by_label[y]
        rng.shuffle(idx)
        n_val = max(1, round(len(idx) * val_fraction)) if len(idx) >= 2 else 0
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    rng.shuffle(train)
    val.sort()
    return train, val
