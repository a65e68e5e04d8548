"""Answer normalisation, label-space induction, and exact slot extraction."""

from __future__ import annotations

import pytest

from poodle_vllm.core.labels import LabelSpace, SelfAgreement, normalize_answer
from poodle_vllm.core.template import TemplateMatcher, extract_slot_text, make_task_id
from poodle_vllm.paths import resolve_paths
from poodle_vllm.testing.traffic import SimpleTokenizer, render_chatml
from poodle_vllm.types import TaskTemplate


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("Positive", "positive"),
        ("  negative.\n", "negative"),
        ("NEGATIVE!", "negative"),
        ("The review is positive.", "positive"),
        ("This review is negative.", "negative"),
        ("Sentiment: Negative", "negative"),
        ("The sentiment of this review is positive.", "positive"),
        ('{"sentiment": "negative"}', "negative"),
        ('```json\n{"topic": "Sports"}\n```', "sports"),
        ('{"label": "World", "confidence": 0.9}', "world"),
        ("**Sci/Tech**", "sci/tech"),
        ("This is a positive review.", "positive"),
        ('"Business"', "business"),
        ("The answer is: Business.", "business"),
    ],
)
def test_normalize_answer(answer, label):
    assert normalize_answer(answer) == label


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   ",
        None,
        '{"a": 1, "b": 2}',
        "I really enjoyed the acting, but the plot dragged on far too long for me.",
    ],
)
def test_unparseable_answers(answer):
    assert normalize_answer(answer) is None


def test_label_space_replaceable_with_canonical_answers():
    space = LabelSpace()
    for _ in range(45):
        space.add("positive", [1, 2], "Positive")
    for _ in range(5):
        space.add("positive", [3, 4, 2], "The review is positive.")
    for _ in range(40):
        space.add("negative", [5, 2], "Negative")
    space.add(None, [], None)
    decision = space.decide(max_labels=8, min_coverage=0.9, min_answers=8)
    assert decision.replaceable is True and decision.reason is None
    pos, neg = space.label_infos(8)
    assert (pos.label, pos.count, pos.canonical_token_ids, pos.canonical_text) == (
        "positive",
        50,
        [1, 2],
        "Positive",
    )
    assert pos.canonical_share == pytest.approx(0.9)
    assert neg.canonical_share == 1.0 and space.unparseable == 1


def test_label_space_generative_reasons():
    too_few = LabelSpace()
    too_few.add("a", [1], "a")
    assert too_few.decide(8, 0.9, 8).replaceable is None
    many = LabelSpace()
    for i in range(100):
        many.add(f"word{i % 30}", [i], f"word{i % 30}")
    d = many.decide(8, 0.9, 8)
    assert d.replaceable is False and "30 distinct answers" in d.reason
    free = LabelSpace()
    for i in range(20):
        free.add(None if i % 3 else "yes", [], None)
    d = free.decide(8, 0.9, 8)
    assert d.replaceable is False and "free text" in d.reason


def test_self_agreement_counts_pairs():
    agreement = SelfAgreement()
    for label in ("positive", "positive", "negative"):
        agreement.add(1, label)
    agreement.add(2, "negative")
    assert agreement.summary() == {"rate": pytest.approx(1 / 3), "pairs": 3}
    assert SelfAgreement().summary() == {"rate": None, "pairs": 0}


def _template(tok, prefix_text, suffix_text):
    return TaskTemplate(tok.encode(prefix_text), tok.encode(suffix_text) if suffix_text else [])


def test_slot_round_trip_with_the_toy_tokenizer():
    tok = SimpleTokenizer()
    head = render_chatml("Be brief.", "Classify:\n")[: -len("<|im_end|>\n<|im_start|>assistant\n")]
    tail = "<|im_end|>\n<|im_start|>assistant\n"
    template = _template(tok, head, tail)
    for slot in ["Ça coûte 5 €, très cher… 日本語!", "«quoted»  double  spaces ", "x"]:
        text = head + slot + tail
        ids = tok.encode(text)
        assert template.matches(ids)
        assert extract_slot_text(template, ids, text, tok.decode) == slot
        assert extract_slot_text(template, ids, None, tok.decode) == slot  # decode fallback
        # a prompt text that does not start with the template falls back to decoding
        assert extract_slot_text(template, ids, "garbled" + text, tok.decode) == slot


def test_matcher_prefers_the_most_specific_template():
    m = TemplateMatcher()
    generic = TaskTemplate(list(range(10)), [99])
    specific = TaskTemplate(list(range(14)), [98, 99])
    m.add(generic, "g")
    m.add(specific, "s")
    assert m.match(list(range(20)) + [98, 99]) == ("s", list(range(14, 20)))
    assert m.match(list(range(20)) + [99]) == ("g", list(range(10, 20)))
    assert m.match([5] * 30) is None
    short = TaskTemplate([1, 2], [])
    m.add(short, "short")
    assert m.match([1, 2, 3]) == ("short", [3])
    m.remove("short")
    assert m.match([1, 2, 3]) is None


def test_task_id_depends_on_tokens_tenant_model_only():
    t = TaskTemplate([1, 2, 3], [4])
    assert make_task_id("m", "|", t) == make_task_id("m", "|", TaskTemplate([1, 2, 3], [4], "x", "y"))
    assert len({make_task_id("m", "|", t), make_task_id("m2", "|", t), make_task_id("m", "a|", t)}) == 3


SMOLLM = resolve_paths().models / "smollm2-135m-instruct"


@pytest.mark.slow
@pytest.mark.skipif(not (SMOLLM / "tokenizer.json").exists(), reason="SmolLM2 is not prepared")
def test_slot_round_trip_with_the_real_tokenizer():
    """The detector's slot text equals the inserted input byte for byte (BPE, multi-byte text)."""
    from poodle_vllm.config import DetectionConfig
    from poodle_vllm.core.detector import TaskDetector
    from poodle_vllm.testing.traffic import load_tokenizer
    from poodle_vllm.types import RequestRecord

    tok = load_tokenizer(SMOLLM)
    assert tok is not None
    slots = [
        "Ça coûte 5 €, très cher… mais très bien!",
        "日本語のレビュー：とても良い映画でした。",
        "  two leading spaces and a trailing one ",
        "Émoji 🎬🍿 ok",
        "plain ascii text here",
        "naïve café, déjà vu",
        "Ünïcödé at the start",
        "ends with a multi-byte char é",
        "€100 well spent",
        "tabs\tand\nnewlines",
    ]
    det = TaskDetector(DetectionConfig(min_requests=4), model="m", block_size=8, tokenizer_decode=tok.decode)
    records = []
    for i, slot in enumerate(slots * 2):
        text = render_chatml(
            "You are a classifier.", f"Classify the sentiment of this review.\n\nReview: {slot}\n\nAnswer:"
        )
        rec = RequestRecord(
            f"r{i}",
            0,
            0,
            tok.encode(text),
            tok.encode("Positive"),
            "stop",
            prompt_text=text,
            output_text="Positive",
        )
        det.observe(rec)
        records.append((slot, rec))
    assigned = [(slot, rec) for slot, rec in records if rec.task_id]
    assert len(assigned) >= len(slots)
    for slot, rec in assigned:
        assert rec.slot_text == slot
        no_text = RequestRecord("x", 0, 0, rec.prompt_token_ids, [], "stop")
        template = det.get_task(rec.task_id).template
        from poodle_vllm.core.template import extract_slot_text

        assert extract_slot_text(template, no_text.prompt_token_ids, None, tok.decode) == slot
