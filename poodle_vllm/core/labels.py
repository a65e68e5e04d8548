"""Answers to labels, and a task's label space.

:func:`normalize_answer` turns an LLM answer into a label or None (unparseable): it strips
whitespace, quotes, markdown and trailing punctuation, lowercases, reads JSON objects such as
``{"sentiment": "negative"}``, and reduces short sentences such as "The review is positive." or
"Sentiment: Negative" to the label word. Long free text is unparseable.

:class:`LabelSpace` counts labels and exact answers of one task and decides whether the task
is *replaceable* (a small label space covers its answers) or *generative*.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from dataclasses import dataclass, field

from poodle_vllm.types import LabelInfo

MAX_LABEL_WORDS = 3
"""A normalised answer with more words than this is free text, not a label."""

_LABEL_KEYS = ("label", "sentiment", "answer", "category", "class", "topic", "result", "prediction", "output")
_LEAD_RE = re.compile(
    r"^(?:(?:the\s+)?(?:final\s+)?(?:answer|label|sentiment|category|class|topic|classification|prediction|output|result)"
    r"\s*(?:is\s*[:=\-]?|[:=\-])\s*)+",
)
_SENTENCE_RE = re.compile(
    r"^(?:i think |i would say |overall,? )?(?:the |this |that )?"
    r"(?:review|text|sentence|article|news(?: article)?|passage|sentiment(?: of (?:the|this) \w+)?|topic(?: of (?:the|this) \w+)?|"
    r"answer|label|category|classification|tone|message|story|item|it)\s+"
    r"(?:is|was|seems|seems to be|appears to be|would be|can be classified as|is classified as|belongs to)\s+"
    r"(?:a |an |the )?(?:clearly |mostly |overall )?(?P<label>[\w/&\- ]+?)(?: one| review| sentiment| category| news| topic)?$"
)
_THIS_IS_RE = re.compile(
    r"^(?:this|it|that) is (?:a |an )?(?:clearly |mostly )?(?P<label>[\w/&\-]+) "
    r"(?:review|one|sentiment|article|text|story|sentence|piece|item)$"
)
_FENCE_RE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
_STRIP_CHARS = " \t\r\n\"'`*_.!?,;:"


def _from_json(text: str) -> str | None:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(obj, dict):
        for k in _LABEL_KEYS:
            for key in obj:
                if (
                    isinstance(key, str)
                    and key.lower() == k
                    and isinstance(obj[key], (str, int, float, bool))
                ):
                    return str(obj[key])
        if len(obj) == 1:
            (value,) = obj.values()
            if isinstance(value, (str, int, float, bool)):
                return str(value)
        return None
    if isinstance(obj, (str, int, float)) and not isinstance(obj, bool):
        return str(obj)
    if isinstance(obj, list) and len(obj) == 1 and isinstance(obj[0], (str, int, float)):
        return str(obj[0])
    return None


@functools.lru_cache(maxsize=8192)  # classification answers repeat: most calls are cache hits
def normalize_answer(text: str | None) -> str | None:
    """The label an answer expresses, or None when it is not a short label."""
    if text is None:
        return None
    s = text.strip()
    if not s:
        return None
    fence = _FENCE_RE.match(s)
    if fence:
        s = fence.group(1).strip()
    if s[:1] in '{["' or s[:1].isdigit():
        value = _from_json(s)
        if value is not None:
            s = value
        elif s[:1] in "{[":
            return None  # JSON without a label-like field
    s = " ".join(s.split()).lower().strip(_STRIP_CHARS)
    s = _LEAD_RE.sub("", s).strip(_STRIP_CHARS)
    m = _SENTENCE_RE.match(s) or _THIS_IS_RE.match(s)
    if m:
        s = m.group("label").strip(_STRIP_CHARS)
    if not s or len(s.split()) > MAX_LABEL_WORDS or len(s) > 40:
        return None
    return s


@dataclass
class LabelDecision:
    replaceable: bool | None
    """True: replaceable; False: generative; None: not enough answers to decide."""
    reason: str | None = None


@dataclass
class LabelSpace:
    """Label statistics of one task (eligible answers only)."""

    counts: Counter = field(default_factory=Counter)
    """label -> eligible parseable answers."""
    answers: dict[str, Counter] = field(default_factory=dict)
    """label -> Counter of exact output token sequences (tuples)."""
    texts: dict[tuple[int, ...], str] = field(default_factory=dict)
    unparseable: int = 0
    max_answers_per_label: int = 64
    """Distinct exact answers tracked per label (bounds memory; the rare tail is dropped)."""

    def add(self, label: str | None, output_token_ids: list[int], output_text: str | None) -> None:
        if label is None:
            self.unparseable += 1
            return
        self.counts[label] += 1
        seqs = self.answers.get(label)
        if seqs is None:
            seqs = self.answers[label] = Counter()
        key = tuple(output_token_ids)
        if key in seqs or len(seqs) < self.max_answers_per_label:
            seqs[key] += 1
            if key not in self.texts and output_text is not None:
                self.texts[key] = output_text

    @property
    def parseable(self) -> int:
        return sum(self.counts.values())

    def decide(self, max_labels: int, min_coverage: float, min_answers: int) -> LabelDecision:
        """Replaceable when at most ``max_labels`` labels cover ``>= min_coverage`` of parseable
        answers and unparseable answers are at most ``1 - min_coverage`` of all answers."""
        parseable = self.parseable
        total = parseable + self.unparseable
        if total < min_answers:
            return LabelDecision(None, f"{total} eligible answers, {min_answers} needed to decide")
        unparseable_share = self.unparseable / total
        if unparseable_share > 1.0 - min_coverage:
            return LabelDecision(False, f"{unparseable_share:.0%} of answers are free text, not labels")
        top = sum(c for _, c in self.counts.most_common(max_labels))
        coverage = top / parseable
        if coverage < min_coverage:
            return LabelDecision(
                False,
                f"{len(self.counts)} distinct answers; the top {max_labels} cover {coverage:.0%} "
                f"(< {min_coverage:.0%})",
            )
        return LabelDecision(True, None)

    def label_infos(self, max_labels: int) -> list[LabelInfo]:
        """The top labels with their canonical answer (most frequent exact token sequence)."""
        out = []
        for label, count in self.counts.most_common(max_labels):
            seqs = self.answers.get(label) or Counter()
            if seqs:
                seq, n = seqs.most_common(1)[0]
                out.append(LabelInfo(label, count, list(seq), self.texts.get(seq, ""), n / count))
            else:
                out.append(LabelInfo(label, count))
        return out

    def load(self, labels: list[LabelInfo], unparseable: int) -> None:
        """Restore from stored LabelInfo (canonical answers only; the tail is not stored)."""
        self.unparseable = unparseable
        for info in labels:
            self.counts[info.label] = info.count
            if info.canonical_token_ids:
                key = tuple(info.canonical_token_ids)
                self.answers.setdefault(info.label, Counter())[key] = max(
                    1, round(info.count * info.canonical_share)
                )
                self.texts[key] = info.canonical_text


@dataclass
class SelfAgreement:
    """Do repeated slots get the same label? Pairs of eligible answers to the same slot."""

    by_slot: dict[int, Counter] = field(default_factory=dict)
    max_slots: int = 20_000

    def add(self, slot_key: int, label: str) -> None:
        labels = self.by_slot.get(slot_key)
        if labels is None:
            if len(self.by_slot) >= self.max_slots:
                return
            labels = self.by_slot[slot_key] = Counter()
        labels[label] += 1

    def summary(self) -> dict[str, float | int | None]:
        pairs = agree = 0
        for labels in self.by_slot.values():
            n = sum(labels.values())
            pairs += n * (n - 1) // 2
            agree += sum(c * (c - 1) // 2 for c in labels.values())
        return {"rate": (agree / pairs) if pairs else None, "pairs": pairs}
