"""Token-level template induction: ``prefix + SLOT + suffix`` from a tenant's recent prompts.

Block hashes show *that* requests share a prefix, at block granularity. The template is found
at token precision with two radix trees over the tenant's recent distinct prompts, one over the
prompts and one over the reversed prompts. A prompt's **anchor** on either side is how deep it
can walk while its continuation is still shared by a recurring group:

* a step is *deterministic* when the prompt's branch holds ``>= dominance`` of the node's
  prompts (template text everyone shares);
* at a divergent node the prompt's branch is a *template fork* (e.g. two instructions behind
  one system prompt) when at least ``min_requests`` prompts take it and, within a short
  lookahead, keep agreeing for ``run_tokens`` tokens;
* anything else is the slot: inputs diverge right away (reviews starting with "I" share one
  token, then scatter).

The prefix anchor and suffix anchor give the prompt's template key; ``min_requests`` distinct
prompts with the same key make a task. A branch that two or more prompts share for a long run
but that is not yet recurring is reported as *pending* so the detector does not file those
prompts under a broader task while a new template is forming.
"""

from __future__ import annotations

import hashlib
import json
import re
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from poodle_vllm.core.token_trie import TokenTrie, TrieNode
from poodle_vllm.types import TaskTemplate

SPECIAL_TOKEN_RE = re.compile(r"<\|[^|>]*\|>|<s>|</s>|\[INST\]|\[/INST\]")
"""Chat-markup special tokens as they appear in decoded text."""
_ROLE_WORDS = {"user", "system", "assistant"}

TemplateKey = tuple[int, int, bytes]
"""(prefix length, suffix length, digest of the prefix and suffix token ids): cheap to hash."""


def template_key(prefix: Sequence[int], suffix: Sequence[int]) -> TemplateKey:
    """The key of the template ``prefix + SLOT + suffix``."""
    pre = prefix if isinstance(prefix, array) else array("i", prefix)
    suf = suffix if isinstance(suffix, array) else array("i", suffix)
    digest = hashlib.blake2b(pre.tobytes() + b"|" + suf.tobytes(), digest_size=16).digest()
    return (len(pre), len(suf), digest)


@dataclass
class InductionParams:
    """Knobs of the anchor rules (the detector derives them from DetectionConfig)."""

    min_requests: int = 8
    """Prompts a fork needs to count as a template fork (and a key to become a task)."""
    dominance: float = 0.99
    """Share of a node's prompts a branch needs to be template text everyone shares."""
    run_tokens: int = 4
    """Tokens a fork's prompts must keep sharing after the fork token (slot coincidences scatter)."""
    lookahead_tokens: int = 2
    """Tokens after a fork that may still lose members before that run starts."""
    pending_run_tokens: int = 6
    """Run two or more prompts must share beyond an anchor to mark a forming template."""
    window: int = 4096
    """Distinct prompts kept per tenant (sliding window)."""
    max_leaf_tokens: int = 256
    """A prompt's unique tail past its divergence point is kept to this many tokens on either
    side (bounds memory for huge prompts; templates are found where prompts diverge)."""


@dataclass
class Anchor:
    """Where a prompt's template ends on one side."""

    depth: int
    node: TrieNode
    pending: bool


def _has_stable_run(
    child: TrieNode, tokens: Sequence[int], pos: int, run_tokens: int, min_count: int, p: InductionParams
) -> bool:
    """Does the prompt's own path from the fork ``child`` (whose edge starts at ``pos``) reach,
    within ``p.lookahead_tokens``, a run of ``run_tokens`` tokens that at least ``min_count``
    prompts share without dropping off?

    Template text keeps its group together for many tokens (one long edge); a slot coincidence
    ("I" + "have" + ...) loses members at every token. A short shared token such as a final
    "." before the chat footer may precede the run, hence the lookahead.
    """
    n = len(tokens)
    node = child
    run = len(child.edge) - 1
    skipped = 0
    pos += len(child.edge)
    while run < run_tokens:
        if pos >= n:
            return False
        nxt = node.children.get(tokens[pos])
        if nxt is None or len(nxt.members) < min_count:
            return False
        if len(nxt.members) >= p.dominance * len(node.members):
            run += len(nxt.edge)
        else:
            skipped += run + 1
            if skipped > p.lookahead_tokens:
                return False
            run = len(nxt.edge) - 1
        pos += len(nxt.edge)
        node = nxt
    return True


def find_anchor(trie: TokenTrie, tokens: Sequence[int], max_depth: int, p: InductionParams) -> Anchor:
    """Walk ``tokens`` (already inserted) down ``trie`` by the rules in the module docstring."""
    node, depth = trie.root, 0
    n = len(tokens)
    while depth < n:
        child = node.children.get(tokens[depth])
        if child is None:
            break
        c_node, c_child = len(node.members), len(child.members)
        step = c_child >= 2 and (
            c_child >= p.dominance * c_node
            or (
                c_child >= p.min_requests
                and _has_stable_run(child, tokens, depth, p.run_tokens, p.min_requests, p)
            )
        )
        if not step or depth + len(child.edge) > max_depth:
            pending = c_child >= 2 and _has_stable_run(child, tokens, depth, p.pending_run_tokens, 2, p)
            return Anchor(depth, node, pending)
        node, depth = child, depth + len(child.edge)
    return Anchor(min(depth, n), node, False)


@dataclass
class _Prompt:
    head: array
    """The prompt's first tokens, as far as the prefix tree holds them."""
    tail: array
    """The prompt's last tokens, as far as the suffix tree holds them."""
    length: int
    digest: bytes
    refs: int = 0
    key: TemplateKey | None = None
    payload: list[Any] = field(default_factory=list)


@dataclass
class Induction:
    """The outcome for one prompt."""

    key: TemplateKey
    members: int
    """Distinct, not pending prompts in the window with this key (this one unless pending)."""
    pending: bool
    pid: int


class TemplateInducer:
    """Induces templates for one tenant from a sliding window of distinct prompts."""

    def __init__(self, params: InductionParams | None = None) -> None:
        self.p = params or InductionParams()
        self.prefix_trie = TokenTrie()
        self.suffix_trie = TokenTrie()
        self._pid_by_prompt: dict[bytes, int] = {}
        self._prompts: dict[int, _Prompt] = {}
        self._key_members: dict[TemplateKey, set[int]] = {}
        self._window: deque[int] = deque()
        self._next_pid = 0

    def observe(self, token_ids: Sequence[int], payload: Any = None) -> Induction:
        """Add one prompt occurrence; return its template key and how many prompts share it."""
        tokens = array("i", token_ids)
        digest = hashlib.blake2b(tokens.tobytes(), digest_size=16).digest()
        pid = self._pid_by_prompt.get(digest)
        if pid is None:
            pid = self._next_pid
            self._next_pid += 1
            self._pid_by_prompt[digest] = pid
            n = len(tokens)
            n_head = self.prefix_trie.insert(pid, tokens, self.p.max_leaf_tokens)
            n_tail = self.suffix_trie.insert(pid, tokens[::-1], self.p.max_leaf_tokens)
            prompt = _Prompt(tokens[:n_head], tokens[n - n_tail :], n, digest)
            self._prompts[pid] = prompt
        prompt = self._prompts[pid]
        prompt.refs += 1
        if payload is not None:
            prompt.payload.append(payload)
        self._window.append(pid)
        while len(self._window) > self.p.window:
            self._release(self._window.popleft())
        key, pending, nodes = self._key_of(prompt)
        self._set_key(pid, prompt, None if pending else key)
        if not pending and len(self._key_members.get(key, ())) < self.p.min_requests:
            self._rekey_forming(pid, nodes)
        return Induction(key, len(self._key_members.get(key, ())), pending, pid)

    def _rekey_forming(self, pid: int, nodes: tuple[TrieNode, TrieNode]) -> None:
        """A fork that just became recurring: its earlier prompts were keyed (or left pending)
        before it was, so re-derive their keys now and the template is found at once."""
        node = min(nodes, key=lambda n: len(n.members))
        if not self.p.min_requests <= len(node.members) <= 4 * self.p.min_requests:
            return  # not a template that is forming (a broad node, or too few prompts)
        for other in list(node.members):
            if other != pid and other in self._prompts:
                prompt = self._prompts[other]
                new_key, pending, _ = self._key_of(prompt)
                self._set_key(other, prompt, None if pending else new_key)

    def _set_key(self, pid: int, prompt: _Prompt, key: TemplateKey | None) -> None:
        """File ``pid`` under ``key``; pending prompts (None) count for no key."""
        if prompt.key == key:
            return
        if prompt.key is not None:
            self._discard_member(prompt.key, pid)
        prompt.key = key
        if key is not None:
            self._key_members.setdefault(key, set()).add(pid)

    def _key_of(self, prompt: _Prompt) -> tuple[TemplateKey, bool, tuple[TrieNode, TrieNode]]:
        head, tail, n = prompt.head, prompt.tail, prompt.length
        pre = find_anchor(self.prefix_trie, head, n, self.p)
        suf = find_anchor(self.suffix_trie, tail[::-1], n - pre.depth, self.p)
        key = template_key(head[: pre.depth], tail[len(tail) - suf.depth :] if suf.depth else array("i"))
        return key, pre.pending or suf.pending, (pre.node, suf.node)

    def settle(self, key: TemplateKey) -> int:
        """Re-derive the keys of ``key``'s members and return how many still have it.

        A prompt's key is computed when it arrives; the first prompts of a new template arrive
        before their fork is recurring and get a broader key. Settling before a task is created
        moves them to their current key, so a broad key is not made a task by stale members.
        """
        for pid in list(self._key_members.get(key, ())):
            prompt = self._prompts[pid]
            new_key, pending, _ = self._key_of(prompt)
            self._set_key(pid, prompt, None if pending else new_key)
        return len(self._key_members.get(key, ()))

    def _discard_member(self, key: TemplateKey, pid: int) -> None:
        members = self._key_members.get(key)
        if members is not None:
            members.discard(pid)
            if not members:
                del self._key_members[key]

    def _release(self, pid: int) -> None:
        prompt = self._prompts[pid]
        prompt.refs -= 1
        if prompt.payload:
            prompt.payload.pop(0)
        if prompt.refs > 0:
            return
        self.prefix_trie.remove(pid, prompt.head)
        self.suffix_trie.remove(pid, prompt.tail[::-1])
        if prompt.key is not None:
            self._discard_member(prompt.key, pid)
        del self._prompts[pid]
        self._pid_by_prompt.pop(prompt.digest, None)

    def members(self, key: TemplateKey) -> list[tuple[array, array, list[Any]]]:
        """(head tokens, tail tokens, payloads observed) of the window's prompts with ``key``.

        Head and tail reach past the template on either side, so the slot's first and last
        tokens are there even when the middle of a huge prompt is not kept."""
        return [
            (p.head, p.tail, p.payload)
            for p in (self._prompts[pid] for pid in self._key_members.get(key, ()))
        ]

    def __len__(self) -> int:
        return len(self._prompts)

    def memory_bytes(self) -> int:
        prompts = sum(
            160 + 4 * (len(p.head) + len(p.tail)) + 64 * len(p.payload) for p in self._prompts.values()
        )
        return (
            self.prefix_trie.memory_bytes()
            + self.suffix_trie.memory_bytes()
            + prompts
            + 150 * len(self._window)
        )


class TemplateMatcher:
    """Finds the most specific template that matches a prompt, in microseconds.

    Templates are kept in a dict keyed by their first few prefix tokens (all templates of a
    tenant usually share a chat header, so the bucket is small), then checked with two list
    comparisons. The most specific match (longest prefix + suffix) wins.
    """

    HEAD = 8

    def __init__(self) -> None:
        self._by_head: dict[tuple[int, ...], list[tuple[int, list[int], list[int], Any]]] = {}
        self._short: list[tuple[int, list[int], list[int], Any]] = []

    def add(self, template: TaskTemplate, value: Any) -> None:
        self.remove(value)
        pre, suf = list(template.prefix_token_ids), list(template.suffix_token_ids)
        entry = (len(pre) + len(suf), pre, suf, value)
        bucket = (
            self._by_head.setdefault(tuple(pre[: self.HEAD]), []) if len(pre) >= self.HEAD else self._short
        )
        bucket.append(entry)
        bucket.sort(key=lambda e: -e[0])

    def remove(self, value: Any) -> None:
        for bucket in [*self._by_head.values(), self._short]:
            bucket[:] = [e for e in bucket if e[3] != value]

    def match(self, token_ids: Sequence[int]) -> tuple[Any, list[int]] | None:
        """(value, slot token ids) of the most specific matching template, or None."""
        n = len(token_ids)
        best = None
        for bucket in (self._by_head.get(tuple(token_ids[: self.HEAD]), ()), self._short):
            for total, pre, suf, value in bucket:
                if best is not None and total <= best[0]:
                    break
                if (
                    total <= n
                    and token_ids[: len(pre)] == pre
                    and (not suf or token_ids[n - len(suf) :] == suf)
                ):
                    best = (total, value, len(pre), len(suf))
                    break
        if best is None:
            return None
        _, value, lp, ls = best
        return value, list(token_ids[lp : n - ls])

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_head.values()) + len(self._short)


def make_task_id(model: str, tenant: str, template: TaskTemplate) -> str:
    """Stable id from the template's token ids, the tenant and the model (never block hashes,
    so a hash seed or block-size change keeps ids)."""
    blob = json.dumps([model, tenant, list(template.prefix_token_ids), list(template.suffix_token_ids)])
    return "t" + hashlib.sha256(blob.encode()).hexdigest()[:15]


def extract_slot_text(
    template: TaskTemplate,
    token_ids: Sequence[int],
    prompt_text: str | None,
    decode: Callable[[list[int]], str] | None,
) -> str | None:
    """The slot's text, byte for byte as it appears in the rendered prompt.

    With the rendered ``prompt_text``, the slot is cut out of it at the decoded lengths of the
    template's prefix and suffix, after checking the text really starts and ends with them (a
    multi-byte character split across the slot boundary would fail the check). Otherwise, or
    when the check fails, the slot's token ids are decoded. ``decode`` must keep special tokens.
    """
    pre_text, suf_text = template.prefix_text, template.suffix_text
    if decode is not None:
        if pre_text is None:
            pre_text = decode(list(template.prefix_token_ids)) if template.prefix_token_ids else ""
        if suf_text is None:
            suf_text = decode(list(template.suffix_token_ids)) if template.suffix_token_ids else ""
    if (
        prompt_text is not None
        and pre_text is not None
        and suf_text is not None
        and len(pre_text) + len(suf_text) <= len(prompt_text)
        and prompt_text.startswith(pre_text)
        and prompt_text.endswith(suf_text)
        and "\ufffd" not in pre_text[-1:] + suf_text[:1]
    ):
        return prompt_text[len(pre_text) : len(prompt_text) - len(suf_text)]
    if decode is None:
        return None
    text = decode(template.slot_token_ids(list(token_ids)))
    # The template's texts may have taken over whitespace every slot has; drop it here too.
    lead = (template.prefix_text or "")[len(decode(list(template.prefix_token_ids))) :]
    trail_len = len(template.suffix_text or "") - len(decode(list(template.suffix_token_ids)))
    trail = (template.suffix_text or "")[:trail_len] if trail_len > 0 else ""
    if lead and lead.isspace() and text.startswith(lead):
        text = text[len(lead) :]
    if trail and trail.isspace() and text.endswith(trail):
        text = text[: len(text) - len(trail)]
    return text


def task_name(template: TaskTemplate, task_id: str, width: int = 60) -> str:
    """A readable name: the instruction text nearest the slot, chat markup removed."""

    def lines(text: str) -> list[str]:
        out = [ln.strip() for ln in text.splitlines()]
        return [ln for ln in out if ln and ln not in _ROLE_WORDS]

    # the prefix's text after its last special token (the user turn), the suffix's before its first
    pre = lines(SPECIAL_TOKEN_RE.split(template.prefix_text or "")[-1])
    suf = lines(SPECIAL_TOKEN_RE.split(template.suffix_text or "")[0])
    if len(pre) >= 2 and len(pre[-1]) < 20:  # "Review:" alone says little; add the instruction
        pre = [pre[-2], pre[-1]]
    parts = [
        _clip(" ".join(pre[-2:]), width // 2, keep_end=True),
        "{slot}",
        _clip(" ".join(suf[:1]), width // 2),
    ]
    name = " ".join(p for p in parts if p)
    return f"task-{task_id[1:9]}" if name == "{slot}" else name


def constant_slot_whitespace(edges: list[tuple[str, str]]) -> tuple[str, str]:
    """Leading and trailing whitespace that every slot has, from (slot start, slot end) texts."""
    if not edges:
        return "", ""
    starts, ends = [a for a, _ in edges], [b for _, b in edges]
    lead = min((s[: len(s) - len(s.lstrip())] for s in starts), key=len)
    trail = min((s[len(s.rstrip()) :] for s in ends), key=len)
    if not all(s.startswith(lead) for s in starts):
        lead = ""
    if not all(s.endswith(trail) for s in ends):
        trail = ""
    return lead, trail


def _clip(text: str, width: int, keep_end: bool = False) -> str:
    if len(text) <= width:
        return text
    return "…" + text[-(width - 1) :] if keep_end else text[: width - 1] + "…"
