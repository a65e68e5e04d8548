"""Simulated templated LLM traffic built from the real labelled datasets (``paths.data_dir()``).

Four sources, all behind one shared system prompt and rendered with SmolLM2's chat template
(ChatML), so the prompts look like what vLLM sees:

* ``imdb_sentiment``: an instruction, then the IMDB review (answers "Positive"/"Negative",
  sometimes "The review is positive.");
* ``ag_news_topic``: an instruction, then the AG News article (answers JSON ``{"topic": ...}``);
* ``sentiment_after``: a Rotten Tomatoes sentence, then the instruction (the template's
  constant text is *after* the slot; answers "positive"/"negative");
* ``chat``: free chat noise (SST-2 sentences as user messages, free-text answers); its true
  template is None.

Any tokenizer works: pass ``encode(text) -> ids`` (special tokens such as ``<|im_start|>`` must
be recognised in the text). :class:`SimpleTokenizer` is a dependency-free, byte-exact stand-in
for fast tests.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from poodle_vllm.core.hashing import block_hash_chain_int64
from poodle_vllm.paths import data_dir
from poodle_vllm.types import RequestRecord

SYSTEM_PROMPT = (
    "You are the text-analysis assistant of Acme Media. Follow the user's instructions exactly, "
    "answer briefly, and never add explanations unless asked."
)
TEMPLATES = {
    "imdb_sentiment": "Classify the sentiment of the following movie review as positive or negative. "
    "Answer with one word.\n\nReview: {slot}",
    "ag_news_topic": "Which topic does this news article belong to: World, Sports, Business or Sci/Tech? "
    'Reply in JSON like {{"topic": "..."}}.\n\nArticle: {slot}',
    "sentiment_after": "{slot}\n\nIs the opinion in the text above positive or negative? Answer with a single word.",
    "chat": "{slot}",
}
DEFAULT_MIX = {"imdb_sentiment": 0.3, "ag_news_topic": 0.25, "sentiment_after": 0.25, "chat": 0.2}
AG_CLASSES = {1: "World", 2: "Sports", 3: "Business", 4: "Sci/Tech"}


def render_chatml(system: str | None, user: str) -> str:
    """SmolLM2's chat template (ChatML) with the generation prompt."""
    out = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    return out + f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


class SimpleTokenizer:
    """Byte-exact toy tokenizer: special tokens, words with their leading space, punctuation.

    Ids are assigned on first sight (deterministic for a given order of texts).
    """

    _RE = re.compile(r"<\|[a-z_]+\|>| ?[^\W\d_]+| ?\d+|\s+|[^\w\s]", re.UNICODE)

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.inverse: list[str] = []

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece in self._RE.findall(text):
            i = self.vocab.get(piece)
            if i is None:
                i = self.vocab[piece] = len(self.inverse)
                self.inverse.append(piece)
            ids.append(i)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.inverse[i] for i in ids)


@dataclass
class TrafficItem:
    """One simulated request with its ground truth."""

    template_id: str | None
    """True template (None for free chat)."""
    slot_text: str
    """The input inserted into the template."""
    prompt_text: str
    prompt_token_ids: list[int]
    output_text: str
    output_token_ids: list[int]
    gold_label: str | None
    cache_salt: str | None = None


def _clip(text: str, max_chars: int) -> str:
    text = " ".join(text.replace("<br />", " ").split())
    return text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0]


def load_sources(root: Path | None = None, max_chars: int = 1000) -> dict[str, list[tuple[str, str | None]]]:
    """(slot text, gold label) per source, read from the shared datasets."""
    root = root or data_dir()
    imdb: list[tuple[str, str | None]] = []
    for part in sorted((root / "imdb").glob("imdb_test_5k_part*.tsv")):
        with part.open(encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                imdb.append(
                    (_clip(row["text"], max_chars), "positive" if row["label"] == "1" else "negative")
                )
    ag: list[tuple[str, str | None]] = []
    with (root / "ag_news" / "test.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text = f"{row['Title']} - {row['Description']}".replace("\\", " ")
            ag.append((_clip(text, max_chars), AG_CLASSES[int(row["Class Index"])]))
    rt: list[tuple[str, str | None]] = []
    with (root / "rotten_tomatoes" / "rt_polarity.tsv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rt.append((_clip(row["text"], max_chars), "positive" if row["label"] == "1" else "negative"))
    chat: list[tuple[str, str | None]] = []
    for name in ("stsa.binary.dev", "stsa.binary.test"):
        for line in (root / "sst2" / name).read_text(encoding="utf-8").splitlines():
            if line[2:].strip():
                chat.append((line[2:].strip(), None))
    return {"imdb_sentiment": imdb, "ag_news_topic": ag, "sentiment_after": rt, "chat": chat}


def _answer(
    template_id: str, gold: str | None, rng: random.Random, pool: list[tuple[str, str | None]]
) -> str:
    """What a well-behaved LLM might answer (mostly one canonical form per label)."""
    if template_id == "imdb_sentiment":
        assert gold is not None
        return f"The review is {gold}." if rng.random() < 0.1 else gold.capitalize()
    if template_id == "ag_news_topic":
        return f'{{"topic": "{gold}"}}'
    if template_id == "sentiment_after":
        return str(gold)
    # free chat: a free-text reply
    return "Sure! " + " ".join(rng.choice(pool)[0] for _ in range(2))


def templated_stream(
    encode: Callable[[str], list[int]],
    n: int,
    *,
    seed: int = 0,
    mix: dict[str, float] | None = None,
    system_prompt: str | None = SYSTEM_PROMPT,
    cache_salts: Sequence[str | None] = (None,),
    sources: dict[str, list[tuple[str, str | None]]] | None = None,
    max_chars: int = 1000,
) -> list[TrafficItem]:
    """``n`` requests drawn at random from the sources by ``mix`` (templates interleaved)."""
    rng = random.Random(seed)
    sources = sources or load_sources(max_chars=max_chars)
    mix = mix or DEFAULT_MIX
    names = list(mix)
    weights = [mix[k] for k in names]
    order = {k: rng.sample(range(len(sources[k])), len(sources[k])) for k in names}
    cursor = dict.fromkeys(names, 0)
    out = []
    for _ in range(n):
        name = rng.choices(names, weights)[0]
        idx = order[name][cursor[name] % len(order[name])]
        cursor[name] += 1
        slot, gold = sources[name][idx]
        user = TEMPLATES[name].format(slot=slot)
        prompt = render_chatml(system_prompt, user)
        answer = _answer(name, gold, rng, sources["chat"])
        out.append(
            TrafficItem(
                template_id=None if name == "chat" else name,
                slot_text=slot,
                prompt_text=prompt,
                prompt_token_ids=encode(prompt),
                output_text=answer,
                output_token_ids=encode(answer),
                gold_label=gold,
                cache_salt=rng.choice(list(cache_salts)),
            )
        )
    return out


def to_record(
    item: TrafficItem, index: int, *, block_size: int | None = 32, model: str = "sim"
) -> RequestRecord:
    """A finished-request record for ``item`` (with vLLM's block hashes when ``block_size``)."""
    hashes = (
        block_hash_chain_int64(item.prompt_token_ids, block_size, cache_salt=item.cache_salt)
        if block_size
        else []
    )
    return RequestRecord(
        request_id=f"sim-{index}",
        arrival_time=float(index),
        finish_time=float(index) + 0.5,
        prompt_token_ids=list(item.prompt_token_ids),
        output_token_ids=list(item.output_token_ids),
        finish_reason="stop",
        block_hashes=hashes,
        block_size=block_size or 0,
        model=model,
        cache_salt=item.cache_salt,
        prompt_text=item.prompt_text,
        output_text=item.output_text,
    )


@dataclass
class LoadedTokenizer:
    """A real tokenizer's encode/decode (special tokens kept) and where it came from."""

    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    source: str


def load_tokenizer(path: str | Path | None = None) -> LoadedTokenizer | None:
    """SmolLM2's tokenizer: ``path``, else the prepared ``models/smollm2-135m-instruct``, else
    None. Rendered prompts contain ``<|im_start|>`` etc., so encoding adds no extra specials."""
    from poodle_vllm.paths import resolve_paths

    folder = Path(path) if path else resolve_paths().models / "smollm2-135m-instruct"
    if not (folder / "tokenizer.json").exists() and not (folder / "tokenizer_config.json").exists():
        return None
    from transformers import AutoTokenizer  # heavy: only when a real tokenizer is wanted

    tok = AutoTokenizer.from_pretrained(str(folder))

    def encode(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)["input_ids"])

    def decode(ids: list[int]) -> str:
        return str(tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))

    return LoadedTokenizer(encode, decode, str(folder))
