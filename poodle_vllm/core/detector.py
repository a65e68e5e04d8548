"""Recurring-task detection: finished requests in, tasks (TaskInfo) out.

:class:`TaskDetector` is fed every finished request (:meth:`TaskDetector.observe`). Per tenant
(``cache_salt|lora``: tenants never share a task) it

1. counts the prompt's vLLM block-hash chain in a :class:`PrefixIndex` (which prefixes recur,
   at block granularity, exactly as the engine's prefix cache sees them);
2. induces the prompt's template at token precision (:mod:`poodle_vllm.core.template`): the
   deepest shared prefix after which prompts diverge, and likewise the shared suffix, so two
   instructions behind one system prompt are two tasks and an instruction after the input is
   found too;
3. once ``min_requests`` distinct prompts share a template, creates a task whose id is derived
   from the template's token ids, the tenant and the model (stable across restarts, hash seeds
   and block sizes);
4. fills the record in place (task, slot text, label, eligibility) and updates the task's label
   space, which decides whether it is replaceable or generative.

:meth:`TaskDetector.match` answers at request arrival, in microseconds, with the most specific
known template. No exception escapes ``observe`` or ``match``: bad input is counted instead.
"""

from __future__ import annotations

import copy
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from poodle_vllm.config import DetectionConfig
from poodle_vllm.core.eligibility import label_ineligibility, prompt_rejection
from poodle_vllm.core.hashing import block_hash_chain_int64
from poodle_vllm.core.labels import LabelSpace, SelfAgreement, normalize_answer
from poodle_vllm.core.prefix_index import PrefixIndex
from poodle_vllm.core.template import (
    InductionParams,
    TemplateInducer,
    TemplateKey,
    TemplateMatcher,
    extract_slot_text,
    make_task_id,
    template_key,
)
from poodle_vllm.types import RequestRecord, TaskInfo, TaskState, TaskTemplate

logger = logging.getLogger(__name__)

# States this module decides; later lifecycle states belong to the worker and are left alone.
_DETECTION_STATES = {TaskState.OBSERVING.value, TaskState.COLLECTING.value, TaskState.GENERATIVE.value}
_ROLE_WORDS = {"user", "system", "assistant"}
_SPECIAL_RE = re.compile(r"<\|[^|>]*\|>|<s>|</s>|\[INST\]|\[/INST\]")


@dataclass
class DetectionResult:
    """What one observed request did."""

    task_id: str | None = None
    rejected: str | None = None
    """Why the prompt was not assigned (prompt_rejection reasons, ``error``), or None."""
    pending: bool = False
    """The prompt looks like part of a template that is still forming (left unassigned)."""
    new_tasks: list[str] = field(default_factory=list)
    changed_tasks: list[str] = field(default_factory=list)
    """Tasks created or whose state/labels changed (the registry should persist these)."""


@dataclass
class _Answer:
    label: str | None
    output_token_ids: tuple[int, ...]
    output_text: str | None
    ineligible: str | None


@dataclass
class _Task:
    info: TaskInfo
    key: TemplateKey
    labels: LabelSpace = field(default_factory=LabelSpace)
    agreement: SelfAgreement = field(default_factory=SelfAgreement)
    ineligible: Counter = field(default_factory=Counter)


class TaskDetector:
    """Detects recurring tasks of one model from finished requests."""

    def __init__(
        self,
        config: DetectionConfig,
        *,
        model: str,
        block_size: int,
        tokenizer_decode: Callable[[list[int]], str] | None = None,
        clock: Callable[[], float] = time.time,
        hash_algo: str = "sha256",
        params: InductionParams | None = None,
        induce_every: int = 8,
    ) -> None:
        self.config = config
        self.model = model
        self.block_size = block_size
        self.decode = tokenizer_decode
        self.clock = clock
        self.hash_algo = hash_algo
        self.params = params or InductionParams(min_requests=max(2, config.min_requests), window=config.window)
        self.prefix_index = PrefixIndex(block_size, max_nodes=config.max_nodes, half_life=config.window, hash_algo=hash_algo)
        self._inducers: dict[str, TemplateInducer] = {}
        self._matchers: dict[str, TemplateMatcher] = {}
        self._tasks: dict[str, _Task] = {}
        self._task_by_key: dict[tuple[str, TemplateKey], str] = {}
        self.induce_every = induce_every
        """Prompts of established label tasks run template induction once per this many."""
        self._fast_count = 0
        self.stats: Counter = Counter()
        """requests, assigned, pending, unassigned, rejected:<reason>, ineligible:<reason>, errors."""

    # -- the hot paths -----------------------------------------------------------------------
    def match(
        self, prompt_token_ids: Sequence[int], cache_salt: str | None = None, lora_name: str | None = None
    ) -> tuple[str, list[int]] | None:
        """(task id, slot token ids) of the most specific known template, or None."""
        try:
            matcher = self._matchers.get(f"{cache_salt or ''}|{lora_name or ''}")
            if matcher is None or not prompt_token_ids:
                return None
            ids = prompt_token_ids if isinstance(prompt_token_ids, list) else list(prompt_token_ids)
            return matcher.match(ids)
        except Exception:  # routing must never fail a request
            logger.exception("poodle: task match failed")
            return None

    def observe(self, record: RequestRecord) -> DetectionResult:
        """Assign a finished request to a task (filling the record in place) and learn from it."""
        try:
            return self._observe(record)
        except Exception:
            logger.exception("poodle: task detection failed for request %s", getattr(record, "request_id", "?"))
            self.stats["errors"] += 1
            return DetectionResult(rejected="error")

    def _observe(self, record: RequestRecord) -> DetectionResult:
        self.stats["requests"] += 1
        record.task_id = record.slot_text = record.label = None
        rejected = prompt_rejection(record, self.config, self.block_size)
        if rejected is not None:
            record.eligible, record.ineligible_reason = False, rejected
            self.stats[f"rejected:{rejected}"] += 1
            return DetectionResult(rejected=rejected)
        tokens = list(record.prompt_token_ids)
        answer = self._answer_of(record)
        record.label = answer.label
        record.eligible = answer.ineligible is None
        record.ineligible_reason = answer.ineligible

        if record.block_hashes and record.block_size == self.block_size:
            chain = record.block_hashes
        else:
            chain = block_hash_chain_int64(
                tokens, self.block_size, hash_algo=self.hash_algo, cache_salt=record.cache_salt, lora_name=record.lora_name
            )
        self.prefix_index.insert_chain(chain)

        tenant = record.tenant
        inducer = self._inducers.get(tenant)
        if inducer is None:
            inducer = self._inducers[tenant] = TemplateInducer(self.params)
            self._matchers.setdefault(tenant, TemplateMatcher())
        task_id = self._settled_match(tenant, tokens)
        created = False
        if task_id is not None:
            result = DetectionResult()
            self.stats["fast_path"] += 1
        else:
            induction = inducer.observe(tokens, answer)
            result = DetectionResult(pending=induction.pending)
            task_id = self._task_by_key.get((tenant, induction.key))
            if (
                task_id is None
                and induction.members >= self.params.min_requests
                and inducer.settle(induction.key) >= self.params.min_requests
            ):
                task_id = self._create_task(tenant, induction.key, tokens, inducer)
                created = True
                result.new_tasks.append(task_id)
            elif task_id is None:
                hit = self._matchers[tenant].match(tokens)
                if hit is not None:
                    info = self._tasks[hit[0]].info
                    tpl = info.template
                    # NOTE: a broad task that is not a label task (a generic chat task) may only
                    # take prompts whose own key is no more specific: it would swallow a forming
                    # template. A label task's template matching is enough (and after a restart
                    # the template trees are empty, so keys are not yet meaningful).
                    broad = info.state in (TaskState.OBSERVING.value, TaskState.GENERATIVE.value)
                    if not broad or (
                        len(tpl.prefix_token_ids) >= induction.key[0] and len(tpl.suffix_token_ids) >= induction.key[1]
                    ):
                        task_id = hit[0]
            if task_id is not None and induction.pending and not created:
                task_id = None
            if task_id is None:
                self.stats["pending" if induction.pending else "unassigned"] += 1
                return result

        task = self._tasks[task_id]
        self.stats["assigned"] += 1
        record.task_id = task_id
        slot_ids = task.info.template.slot_token_ids(tokens)
        record.slot_text = extract_slot_text(task.info.template, tokens, record.prompt_text, self.decode)
        new_label = False
        if not created:  # a new task was seeded with this record already
            new_label = answer.label is not None and answer.label not in task.labels.counts
            self._count_answer(task, answer, hash(tuple(slot_ids)))
        result.task_id = task_id
        # NOTE: deciding the label space sorts the labels; do it when something can have changed
        # (new task or label, still observing) and otherwise every 16 requests.
        seen = task.info.requests_seen
        due = created or new_label or task.info.state == TaskState.OBSERVING.value or seen % 16 == 0
        if due and (self._refresh_state(task) or created):
            result.changed_tasks.append(task_id)
        return result

    def _settled_match(self, tenant: str, tokens: list[int]) -> str | None:
        """Fast path: a prompt of an established label task skips template induction.

        Only tasks past observing and not generative qualify (a generic chat task may hide a
        template that is still forming), and every ``induce_every``-th such prompt still goes
        through induction so the template trees keep seeing the task's traffic.
        """
        if self.induce_every <= 1:
            return None
        hit = self._matchers[tenant].match(tokens)
        if hit is None:
            return None
        info = self._tasks[hit[0]].info
        if info.state in (TaskState.OBSERVING.value, TaskState.GENERATIVE.value):
            return None
        if info.requests_seen < 2 * self.params.min_requests:
            return None
        self._fast_count += 1
        return None if self._fast_count % self.induce_every == 0 else info.task_id

    # -- answers and label spaces ------------------------------------------------------------
    def _answer_of(self, record: RequestRecord) -> _Answer:
        ineligible = label_ineligibility(record, self.config)
        text = record.output_text
        if text is None and self.decode is not None and record.output_token_ids:
            text = _SPECIAL_RE.sub("", self.decode(list(record.output_token_ids)))
        label = normalize_answer(text) if ineligible is None else None
        if ineligible is None and label is None:
            ineligible = "unparseable_answer"
        out = tuple(record.output_token_ids or ())
        return _Answer(label, out, text, ineligible)

    def _count_answer(self, task: _Task, answer: _Answer, slot_key: int) -> None:
        info = task.info
        info.requests_seen += 1
        info.updated_at = self.clock()
        if answer.ineligible == "unparseable_answer":
            info.eligible_seen += 1
            task.labels.add(None, [], None)
        elif answer.ineligible is not None:
            task.ineligible[answer.ineligible] += 1
            self.stats[f"ineligible:{answer.ineligible}"] += 1
        else:
            info.eligible_seen += 1
            assert answer.label is not None
            task.labels.add(answer.label, list(answer.output_token_ids), answer.output_text)
            task.agreement.add(slot_key, answer.label)

    def _refresh_state(self, task: _Task) -> bool:
        """Re-decide observing / collecting / generative; True when state or labels changed."""
        info = task.info
        before = (info.state, [label.label for label in info.labels], info.reason)
        decision = task.labels.decide(
            self.config.max_labels, self.config.min_label_coverage, max(2, self.config.min_requests)
        )
        if info.state in _DETECTION_STATES:
            if decision.replaceable is None:
                info.state = TaskState.OBSERVING.value
            else:
                info.state = (TaskState.COLLECTING if decision.replaceable else TaskState.GENERATIVE).value
            info.reason = decision.reason
        info.unparseable = task.labels.unparseable
        info.labels = task.labels.label_infos(self.config.max_labels) if decision.replaceable else []
        return before != (info.state, [label.label for label in info.labels], info.reason)

    # -- tasks -------------------------------------------------------------------------------
    def _create_task(self, tenant: str, key: TemplateKey, tokens: list[int], inducer: TemplateInducer) -> str:
        len_prefix, len_suffix, _ = key
        template = TaskTemplate(tokens[:len_prefix], tokens[len(tokens) - len_suffix :] if len_suffix else [])
        prefix, suffix = template.prefix_token_ids, template.suffix_token_ids
        if self.decode is not None:
            template.prefix_text = self.decode(list(prefix)) if prefix else ""
            template.suffix_text = self.decode(list(suffix)) if suffix else ""
            lead, trail = _constant_slot_whitespace(
                [self.decode(template.slot_token_ids(list(toks))) for toks, _ in inducer.members(key)[:32]]
            )
            # NOTE: BPE glues the space after "Review:" to the input's first word, so the token
            # boundary puts it in the slot; whitespace every slot has belongs to the template text.
            template.prefix_text += lead
            template.suffix_text = trail + template.suffix_text
        task_id = make_task_id(self.model, tenant, template)
        now = self.clock()
        info = TaskInfo(
            task_id=task_id,
            name=_task_name(template, task_id),
            state=TaskState.OBSERVING.value,
            tenant=tenant,
            model=self.model,
            template=template,
            created_at=now,
            updated_at=now,
        )
        info.extra["detected_after_requests"] = len(inducer.members(key))
        task = _Task(info, key)
        self._register(task)
        # Seed the label space with the answers of the prompts that made the template recur.
        for tokens, answers in inducer.members(key):
            slot_key = hash(tuple(template.slot_token_ids(list(tokens))))
            for answer in answers:
                self._count_answer(task, answer, slot_key)
        self._refresh_state(task)
        logger.info("poodle: new recurring task %s (%s) for tenant %r", task_id, info.name, tenant)
        return task_id

    def _register(self, task: _Task) -> None:
        info = task.info
        self._tasks[info.task_id] = task
        self._task_by_key[(info.tenant, task.key)] = info.task_id
        if info.tenant not in self._matchers:
            self._matchers[info.tenant] = TemplateMatcher()
        self._matchers[info.tenant].add(info.template, info.task_id)

    def tasks(self) -> list[TaskInfo]:
        """Snapshots of all tasks, with label-space and eligibility summaries in ``extra``."""
        out = []
        for task in self._tasks.values():
            info = task.info
            ineligible = sum(task.ineligible.values())
            info.extra.update(
                {
                    "self_agreement": task.agreement.summary(),
                    "ineligible": dict(task.ineligible),
                    "ineligible_share": ineligible / info.requests_seen if info.requests_seen else 0.0,
                    "prefix_tokens": len(info.template.prefix_token_ids),
                    "suffix_tokens": len(info.template.suffix_token_ids),
                    "distinct_labels": len(task.labels.counts),
                }
            )
            out.append(info)
        return sorted(out, key=lambda t: (-t.requests_seen, t.task_id))

    def load_tasks(self, infos: list[TaskInfo]) -> None:
        """Restore tasks (e.g. from the registry after a restart); ids and templates are kept."""
        for info in infos:
            info = copy.deepcopy(info)  # the caller's objects stay the caller's
            key = template_key(info.template.prefix_token_ids, info.template.suffix_token_ids)
            task = _Task(info, key)
            task.labels.load(info.labels, info.unparseable)
            ineligible = info.extra.get("ineligible")
            if isinstance(ineligible, dict):
                task.ineligible.update({str(k): int(v) for k, v in ineligible.items()})
            self._register(task)

    def get_task(self, task_id: str) -> TaskInfo | None:
        task = self._tasks.get(task_id)
        return task.info if task else None

    def summary(self) -> dict[str, object]:
        """Counters plus the share of requests not usable as labels."""
        total = self.stats["requests"] or 1
        not_label = sum(v for k, v in self.stats.items() if k.startswith(("rejected:", "ineligible:")))
        return {**dict(self.stats), "tasks": len(self._tasks), "ineligible_share": not_label / total}

    def memory_bytes(self) -> int:
        """Estimate of the detector's memory (prefix index, template trees, tasks)."""
        tasks = sum(
            2000 + 8 * (len(t.info.template.prefix_token_ids) + len(t.info.template.suffix_token_ids))
            + 200 * len(t.agreement.by_slot)
            for t in self._tasks.values()
        )
        return self.prefix_index.memory_bytes() + sum(i.memory_bytes() for i in self._inducers.values()) + tasks


def _task_name(template: TaskTemplate, task_id: str, width: int = 60) -> str:
    """A readable name: the instruction text nearest the slot, chat markup removed."""

    def lines(text: str) -> list[str]:
        out = [ln.strip() for ln in text.splitlines()]
        return [ln for ln in out if ln and ln not in _ROLE_WORDS]

    # the prefix's text after its last special token (the user turn), the suffix's before its first
    pre = lines(_SPECIAL_RE.split(template.prefix_text or "")[-1])
    suf = lines(_SPECIAL_RE.split(template.suffix_text or "")[0])
    if len(pre) >= 2 and len(pre[-1]) < 20:  # "Review:" alone says little; add the instruction
        pre = [pre[-2], pre[-1]]
    parts = [_clip(" ".join(pre[-2:]), width // 2, keep_end=True), "{slot}", _clip(" ".join(suf[:1]), width // 2)]
    name = " ".join(p for p in parts if p)
    return f"task-{task_id[1:9]}" if name == "{slot}" else name


def _constant_slot_whitespace(slots: list[str]) -> tuple[str, str]:
    """Leading and trailing whitespace that every slot text has (moved into the template)."""
    if not slots:
        return "", ""
    lead = min((s[: len(s) - len(s.lstrip())] for s in slots), key=len)
    trail = min((s[len(s.rstrip()) :] for s in slots), key=len)
    if not all(s.startswith(lead) for s in slots):
        lead = ""
    if not all(s.endswith(trail) for s in slots):
        trail = ""
    return lead, trail


def _clip(text: str, width: int, keep_end: bool = False) -> str:
    if len(text) <= width:
        return text
    return "…" + text[-(width - 1) :] if keep_end else text[: width - 1] + "…"


if __name__ == "__main__":  # demo: two instructions behind one system prompt, ids as plain ints
    import random

    rng = random.Random(0)
    system = list(range(1, 50))
    det = TaskDetector(DetectionConfig(min_requests=4), model="demo", block_size=16)
    for i in range(60):
        instruction = list(range(100, 112)) if i % 2 else list(range(200, 215))
        answer = [7] if rng.random() < 0.5 else [8]
        rec = RequestRecord(
            f"r{i}", 0.0, 0.0, system + instruction + [rng.randrange(1000, 9000) for _ in range(30)], answer, "stop",
            output_text="positive" if answer == [7] else "negative",
        )
        det.observe(rec)
    for t in det.tasks():
        print(t.task_id, t.state, t.requests_seen, len(t.template.prefix_token_ids), [lb.label for lb in t.labels])
    print(det.summary(), f"memory~{det.memory_bytes() / 1024:.0f} KiB", file=sys.stderr)
