"""The mean-pooling head: built from a base encoder, saved, and reloaded three ways."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from poodle_vllm.surrogate.runtime import batched_logits, collate
from poodle_vllm.train.heads import (
    build_classifier,
    load_classifier,
    load_tokenizer,
    save_classifier,
    saved_head_class,
)
from poodle_vllm.train.modeling import MODELING_FILE, BertMeanPoolForSequenceClassification, masked_mean

ENCODED = [[2, 5, 6, 7, 3], [2, 9, 3], [2, 10, 11, 12, 13, 14, 3]]


def _logits(model, encoded=ENCODED) -> np.ndarray:
    model.eval()
    ids, mask = collate(encoded, 0)
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask).logits.numpy()


def test_masked_mean_ignores_padding() -> None:
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.allclose(masked_mean(h, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_mean_head_saved_folder_loads_with_plain_transformers(
    tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    model = build_classifier(tiny_base, ["neg", "pos", "neutral"], pooling="mean")
    assert isinstance(model, BertMeanPoolForSequenceClassification)
    # The encoder weights come from the base checkpoint, not a fresh init.
    base = AutoModel.from_pretrained(tiny_base)
    assert torch.equal(base.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)
    expected = _logits(model)
    save_classifier(model, tmp_path)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(tmp_path)
    assert (tmp_path / MODELING_FILE).exists()
    assert saved_head_class(tmp_path) is BertMeanPoolForSequenceClassification

    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True)
    np.testing.assert_allclose(_logits(plain), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_logits(load_classifier(tmp_path)), expected, rtol=1e-5, atol=1e-6)
    assert plain.config.id2label[2] == "neutral"
    # Without trust_remote_code transformers refuses (it must not build its CLS head over these weights).
    with pytest.raises((ValueError, OSError)):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=False)

    # Poodle's own loads never stop to ask whether to run the folder's code.
    def no_prompt(*_: object) -> str:
        raise AssertionError("transformers asked to run remote code")

    monkeypatch.setattr("builtins.input", no_prompt)
    assert load_tokenizer(tmp_path).convert_tokens_to_ids("good") == AutoTokenizer.from_pretrained(
        tiny_base
    ).convert_tokens_to_ids("good")
    # The fine-tuned encoder alone, for feature extraction by model search, with a plain config.
    from poodle_vllm.store.encoder import load_encoder

    enc = load_encoder(tmp_path).model
    assert enc.config.model_type == "bert"
    q = enc.encoder.layer[0].attention.self.query.weight
    assert torch.equal(q, model.bert.encoder.layer[0].attention.self.query.weight)
    # ... and a fine-tune of a fine-tune starts from those weights.
    again = build_classifier(tmp_path, ["x", "y"], pooling="mean")
    assert torch.equal(again.bert.encoder.layer[0].attention.self.query.weight, q)


def test_runtime_fused_head_matches_the_module_forward(tiny_base: Path) -> None:
    model = build_classifier(tiny_base, ["a", "b"], pooling="mean").eval()
    np.testing.assert_allclose(batched_logits(model, ENCODED, 0, 2), _logits(model), rtol=1e-5, atol=1e-6)


def test_cls_pooling_is_transformers_own_head(tiny_base: Path) -> None:
    model = build_classifier(tiny_base, ["a", "b"], pooling="cls")
    assert type(model).__name__ == "BertForSequenceClassification"
    with pytest.raises(ValueError, match="pooling"):
        build_classifier(tiny_base, ["a", "b"], pooling="max")
