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
    SPECIAL_TOKEN_RE,
    InductionParams,
    TemplateInducer,
    TemplateKey,
    TemplateMatcher,
    constant_slot_whitespace,
    extract_slot_text,
    make_task_id,
    task_name,
    template_key,
)
from poodle_vllm.types import RequestRecord, TaskInfo, TaskState, TaskTemplate

logger = logging.getLogger(__name__)

# States this module decides; later lifecycle states belong to the worker and are left alone.
_OBSERVING, _COLLECTING, _GENERATIVE = (
    TaskState.OBSERVING.value,
    TaskState.COLLECTING.value,
    TaskState.GENERATIVE.value,
)
_DETECTION_STATES = {_OBSERVING, _COLLECTING, _GENERATIVE}
_BROAD_STATES = (_OBSERVING, _GENERATIVE)  # tasks that may hide a template still forming


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
    variants: list[TaskTemplate] = field(default_factory=list)
    """Every template induced for this task; they differ by a few tokens at the slot's edges
    (``TaskDetector.max_variant_tokens``). ``info.template`` is the most general one."""
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
        max_variant_tokens: int = 4,
    ) -> None:
        self.config = config
        self.model = model
        self.block_size = block_size
        self.decode = tokenizer_decode
        self.clock = clock
        self.hash_algo = hash_algo
        self.params = params or InductionParams(
            min_requests=max(2, config.min_requests), window=config.window
        )
        self.prefix_index = PrefixIndex(
            block_size, max_nodes=config.max_nodes, half_life=config.window, hash_algo=hash_algo
        )
        self._inducers: dict[str, TemplateInducer] = {}
        self._matchers: dict[str, TemplateMatcher] = {}
        self._tasks: dict[str, _Task] = {}
        self._task_by_key: dict[tuple[str, TemplateKey], str] = {}
        """(tenant, template key) -> task id (a task's variants included)."""
        self.induce_every = induce_every
        """Prompts of established label tasks run template induction once per this many."""
        self._fast_count = 0
        self._last_chain: list[int] = []
        self.max_variant_tokens = max_variant_tokens
        """A new template within this many boundary tokens of a task's template joins that task."""
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
            logger.exception(
                "poodle: task detection failed for request %s", getattr(record, "request_id", "?")
            )
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
                tokens,
                self.block_size,
                hash_algo=self.hash_algo,
                cache_salt=record.cache_salt,
                lora_name=record.lora_name,
            )
        self.prefix_index.insert_chain(chain)
        self._last_chain = chain

        tenant = record.tenant
        inducer = self._inducers.get(tenant)
        if inducer is None:
            inducer = self._inducers[tenant] = TemplateInducer(self.params)
            self._matchers.setdefault(tenant, TemplateMatcher())
        settled = self._settled_match(tenant, tokens)
        created = False
        if settled is not None:
            task_id = settled
            result = DetectionResult()
            self.stats["fast_path"] += 1
        else:
            induction = inducer.observe(tokens, answer)
            result = DetectionResult(pending=induction.pending)
            found = self._task_by_key.get((tenant, induction.key))
            if (
                found is None
                and induction.members >= self.params.min_requests
                and inducer.settle(induction.key) >= self.params.min_requests
            ):
                found, created = self._create_task(tenant, induction.key, tokens, inducer)
                if created:
                    result.new_tasks.append(found)
                else:
                    result.changed_tasks.append(found)
            elif found is None:
                hit = self._matchers[tenant].match(tokens)
                if hit is not None:
                    info = self._tasks[hit[0]].info
                    tpl = info.template
                    # NOTE: a broad task that is not a label task (a generic chat task) may only
                    # take prompts whose own key is no more specific: it would swallow a forming
                    # template. A label task's template matching is enough (and after a restart
                    # the template trees are empty, so keys are not yet meaningful).
                    broad = info.state in _BROAD_STATES
                    if not broad or (
                        len(tpl.prefix_token_ids) >= induction.key[0]
                        and len(tpl.suffix_token_ids) >= induction.key[1]
                    ):
                        found = hit[0]
            if found is not None and induction.pending and not created:
                found = None
            if found is None:
                self.stats["pending" if induction.pending else "unassigned"] += 1
                return result
            task_id = found

        task = self._tasks[task_id]
        template = task.info.template
        self.stats["assigned"] += 1
        record.task_id = task_id
        slot_ids = template.slot_token_ids(tokens)
        record.slot_text = extract_slot_text(template, tokens, record.prompt_text, self.decode)
        new_label = False
        if not created and not result.changed_tasks:  # a new task/variant was seeded with this record
            new_label = answer.label is not None and answer.label not in task.labels.counts
            # the slot's text identifies the input (cheaper to hash than its token ids)
            slot_key = hash(record.slot_text) if record.slot_text is not None else hash(tuple(slot_ids))
            self._count_answer(task, answer, slot_key)
        result.task_id = task_id
        # NOTE: deciding the label space sorts the labels; do it when something can have changed
        # (new task or label, still observing) and otherwise every 16 requests.
        seen = task.info.requests_seen
        due = created or new_label or task.info.state == _OBSERVING or seen % 16 == 0
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
        if info.state in _BROAD_STATES:
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
            text = SPECIAL_TOKEN_RE.sub("", self.decode(list(record.output_token_ids)))
        label = normalize_answer(text) if ineligible is None else None
        if ineligible is None and label is None:
            ineligible = "unparseable_answer"
        out = tuple(record.output_token_ids or ())
        return _Answer(label, out, text, ineligible)

    def _count_answer(self, task: _Task, answer: _Answer, slot_key: int | None) -> None:
        """Count one answer; ``slot_key`` (None: unknown) pairs answers to the same input."""
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
            if slot_key is not None:
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
    def _make_template(self, key: TemplateKey, tokens: list[int], inducer: TemplateInducer) -> TaskTemplate:
        len_prefix, len_suffix, _ = key
        template = TaskTemplate(tokens[:len_prefix], tokens[len(tokens) - len_suffix :] if len_suffix else [])
        prefix, suffix = template.prefix_token_ids, template.suffix_token_ids
        if self.decode is not None:
            template.prefix_text = self.decode(list(prefix)) if prefix else ""
            template.suffix_text = self.decode(list(suffix)) if suffix else ""
            lp, ls = len(prefix), len(suffix)
            edges = [
                (
                    self.decode(list(head[lp : lp + 4])),
                    self.decode(list(tail[max(0, len(tail) - ls - 4) : len(tail) - ls])),
                )
                for head, tail, _ in inducer.members(key)[:32]
            ]
            lead, trail = constant_slot_whitespace(edges)
            # NOTE: BPE glues the space after "Review:" to the input's first word, so the token
            # boundary puts it in the slot; whitespace every slot has belongs to the template text.
            template.prefix_text += lead
            template.suffix_text = trail + template.suffix_text
        return template

    def _variant_of(self, tenant: str, template: TaskTemplate) -> _Task | None:
        """An existing task whose template differs from ``template`` only by a few tokens at the
        slot's edges (one prefix extends the other, one suffix extends the other)."""
        p, s = template.prefix_token_ids, template.suffix_token_ids
        for task in self._tasks.values():
            if task.info.tenant != tenant:
                continue
            q, r = task.info.template.prefix_token_ids, task.info.template.suffix_token_ids
            short_p, long_p = (p, q) if len(p) <= len(q) else (q, p)
            short_s, long_s = (s, r) if len(s) <= len(r) else (r, s)
            if long_p[: len(short_p)] != short_p or (
                short_s and long_s[len(long_s) - len(short_s) :] != short_s
            ):
                continue
            if (len(long_p) - len(short_p)) + (len(long_s) - len(short_s)) <= self.max_variant_tokens:
                return task
        return None

    def _create_task(
        self, tenant: str, key: TemplateKey, tokens: list[int], inducer: TemplateInducer
    ) -> tuple[str, bool]:
        """A new task for ``key`` (True), or a new variant of a task it differs little from (False)."""
        template = self._make_template(key, tokens, inducer)
        task = self._variant_of(tenant, template)
        created = task is None
        if task is None:
            task_id = make_task_id(self.model, tenant, template)
            now = self.clock()
            info = TaskInfo(
                task_id=task_id,
                name=task_name(template, task_id),
                state=TaskState.OBSERVING.value,
                tenant=tenant,
                model=self.model,
                template=template,
                created_at=now,
                updated_at=now,
            )
            info.extra["detected_after_requests"] = len(inducer.members(key))
            # how much of the template the engine's prefix cache shares (full recurring blocks)
            info.extra["shared_prefix_blocks"] = self.prefix_index.shared_depth(
                self._last_chain[: len(template.prefix_token_ids) // self.block_size],
                self.params.min_requests,
            )
            task = _Task(info, key)
            self._register(task)
        else:
            # NOTE: the first prompts of a template can share a token at the slot's edge by chance
            # ("Review: I ..."); the template induced then is a little too specific, and a second
            # key appears later. Both route to one task (the more general template routes and
            # cuts slots); the id stays the one derived from the first template.
            self._add_variant(task, key, template)
            logger.info("poodle: task %s gets a template variant", task.info.task_id)
        # Seed the label space with the answers of the prompts that made the template recur.
        for _, _, answers in inducer.members(key):
            for answer in answers:
                self._count_answer(task, answer, None)
        self._refresh_state(task)
        if created:
            logger.info(
                "poodle: new recurring task %s (%s) for tenant %r", task.info.task_id, task.info.name, tenant
            )
        return task.info.task_id, created

    def _register(self, task: _Task) -> None:
        info = task.info
        self._tasks[info.task_id] = task
        task.variants = [info.template]
        self._task_by_key[(info.tenant, task.key)] = info.task_id
        if info.tenant not in self._matchers:
            self._matchers[info.tenant] = TemplateMatcher()
        self._matchers[info.tenant].add(info.template, info.task_id)

    def _add_variant(self, task: _Task, key: TemplateKey, template: TaskTemplate) -> None:
        """Route ``key`` to ``task``; a more general template becomes the task's template."""
        info = task.info
        task.variants.append(template)
        self._task_by_key[(info.tenant, key)] = info.task_id
        current = len(info.template.prefix_token_ids) + len(info.template.suffix_token_ids)
        if len(template.prefix_token_ids) + len(template.suffix_token_ids) < current:
            # the general template matches every prompt the specific one does, and cuts the
            # whole input as the slot
            info.template = template
            self._matchers[info.tenant].add(template, info.task_id)
        info.extra["variants"] = [
            {
                "prefix_token_ids": list(t.prefix_token_ids),
                "suffix_token_ids": list(t.suffix_token_ids),
                "prefix_text": t.prefix_text,
                "suffix_text": t.suffix_text,
            }
            for t in task.variants
            if t is not info.template
        ]

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
            for v in info.extra.get("variants") or []:
                tpl = TaskTemplate(
                    list(v["prefix_token_ids"]),
                    list(v["suffix_token_ids"]),
                    v.get("prefix_text"),
                    v.get("suffix_text"),
                )
                self._add_variant(task, template_key(tpl.prefix_token_ids, tpl.suffix_token_ids), tpl)

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
            2000
            + 8 * (len(t.info.template.prefix_token_ids) + len(t.info.template.suffix_token_ids))
            + 200 * len(t.agreement.by_slot)
            for t in self._tasks.values()
        )
        return (
            self.prefix_index.memory_bytes() + sum(i.memory_bytes() for i in self._inducers.values()) + tasks
        )


if __name__ == "__main__":  # demo: two instructions behind one system prompt, ids as plain ints
    import random

    rng = random.Random(0)
    system = list(range(1, 50))
    det = TaskDetector(DetectionConfig(min_requests=4), model="demo", block_size=16)
    for i in range(60):
        instruction = list(range(100, 112)) if i % 2 else list(range(200, 215))
        answer = [7] if rng.random() < 0.5 else [8]
        rec = RequestRecord(
            f"r{i}",
            0.0,
            0.0,
            system + instruction + [rng.randrange(1000, 9000) for _ in range(30)],
            answer,
            "stop",
            output_text="positive" if answer == [7] else "negative",
        )
        det.observe(rec)
    for t in det.tasks():
        print(
            t.task_id,
            t.state,
            t.requests_seen,
            len(t.template.prefix_token_ids),
            [lb.label for lb in t.labels],
        )
    print(det.summary(), f"memory~{det.memory_bytes() / 1024:.0f} KiB", file=sys.stderr)
