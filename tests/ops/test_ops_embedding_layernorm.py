"""Fused BERT embedding sum + LayerNorm kernel vs the torch reference and HF BertEmbeddings.

Tolerance: fp32 atol=rtol=1e-5.
"""

from __future__ import annotations

import pytest
import torch

from poodle_vllm.ops import reference

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"


def _tables(vocab: int, max_pos: int, types: int, h: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [
        t.to(DEVICE)
        for t in (
            torch.randn(vocab, h, generator=g),
            torch.randn(max_pos, h, generator=g),
            torch.randn(types, h, generator=g),
            1.0 + 0.1 * torch.randn(h, generator=g),
            0.1 * torch.randn(h, generator=g),
        )
    ]


@pytest.mark.parametrize("b,seq,h", [(1, 1, 8), (2, 9, 37), (3, 17, 384), (2, 5, 100)])
def test_embedding_layernorm_matches_reference(triton_ops, b, seq, h):
    word, pos, typ, gamma, beta = _tables(50, 32, 2, h, seed=h)
    g = torch.Generator().manual_seed(b + seq)
    ids = torch.randint(0, 50, (b, seq), generator=g).to(DEVICE)
    types = torch.randint(0, 2, (b, seq), generator=g).to(DEVICE)
    out = triton_ops.embedding_layernorm.embedding_layernorm(ids, word, pos, typ, gamma, beta, types)
    ref = reference.embedding_layernorm(ids, word, pos, typ, gamma, beta, types)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_embedding_layernorm_explicit_positions_int32_ids(triton_ops):
    word, pos, typ, gamma, beta = _tables(40, 64, 3, 24, seed=5)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 40, (3, 6), generator=g, dtype=torch.int32).to(DEVICE)
    positions = torch.randint(0, 64, (3, 6), generator=g).to(DEVICE)
    out = triton_ops.embedding_layernorm.embedding_layernorm(
        ids, word, pos, typ, gamma, beta, None, positions, eps=1e-5
    )
    ref = reference.embedding_layernorm(ids.long(), word, pos, typ, gamma, beta, None, positions, eps=1e-5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # importing transformers' BERT takes ~10 s on this host
def test_reference_matches_hf_bert_embeddings():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
    )
    torch.manual_seed(0)
    emb = transformers.models.bert.modeling_bert.BertEmbeddings(cfg).eval()
    ids = torch.randint(0, 64, (2, 11))
    types = torch.randint(0, 2, (2, 11))
    with torch.no_grad():
        expected = emb(input_ids=ids, token_type_ids=types)
    got = reference.embedding_layernorm(
        ids,
        emb.word_embeddings.weight,
        emb.position_embeddings.weight,
        emb.token_type_embeddings.weight,
        emb.LayerNorm.weight,
        emb.LayerNorm.bias,
        types,
        eps=cfg.layer_norm_eps,
    )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
