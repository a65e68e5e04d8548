"""Fused masked-mean-pool + head + softmax kernel vs the torch reference.

Tolerances: fp32 inputs atol=rtol=1e-5 (only summation order differs); fp16 hidden
states (GPU only) atol=rtol=2e-3 on probabilities.
"""

from __future__ import annotations

import pytest
import torch

from poodle_vllm.ops import reference

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"


def _inputs(b: int, seq: int, h: int, c: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, seq, h, generator=g).to(dtype)
    lengths = torch.randint(0, seq + 1, (b,), generator=g)
    lengths[0] = seq  # one full row
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    weight = torch.randn(c, h, generator=g) * 0.2
    bias = torch.randn(c, generator=g)
    return hidden.to(DEVICE), mask.to(DEVICE), weight.to(DEVICE), bias.to(DEVICE)


@pytest.mark.parametrize(
    "b,seq,h,c",
    [(1, 1, 8, 2), (3, 7, 37, 5), (5, 33, 64, 3), (4, 19, 384, 11), (2, 5, 96, 300)],
)
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.7])
def test_pool_classify_matches_reference(triton_ops, b, seq, h, c, temperature):
    hidden, mask, weight, bias = _inputs(b, seq, h, c, seed=b * 100 + seq)
    logits, probs = triton_ops.pool_classify.pool_classify(hidden, mask, weight, bias, temperature)
    ref_logits, ref_probs = reference.pool_classify(hidden, mask, weight, bias, temperature)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, ref_probs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(b, device=probs.device), atol=1e-5, rtol=0)


def test_pool_classify_bool_mask_no_bias_and_empty_row(triton_ops):
    hidden, mask, weight, _ = _inputs(3, 6, 20, 4, seed=7)
    mask = mask.bool()
    mask[2] = False  # a request with no tokens pools to zeros
    logits, probs = triton_ops.pool_classify.pool_classify(hidden, mask, weight, None)
    ref_logits, ref_probs = reference.pool_classify(hidden, mask, weight, None)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, ref_probs, atol=1e-5, rtol=1e-5)
    assert torch.all(logits[2] == 0)


def test_pool_classify_non_contiguous_hidden(triton_ops):
    hidden, mask, weight, bias = _inputs(4, 9, 48, 6, seed=3)
    hidden_t = hidden.transpose(1, 2).contiguous().transpose(1, 2)  # same values, odd strides
    assert not hidden_t.is_contiguous()
    out = triton_ops.pool_classify.pool_classify(hidden_t, mask, weight, bias, 1.3)
    ref = reference.pool_classify(hidden, mask, weight, bias, 1.3)
    torch.testing.assert_close(out[1], ref[1], atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not HAS_CUDA, reason="fp16 kernel inputs are checked on a GPU only")
def test_pool_classify_fp16_hidden(triton_ops):
    hidden, mask, weight, bias = _inputs(8, 64, 384, 7, seed=11, dtype=torch.float16)
    _, probs = triton_ops.pool_classify.pool_classify(hidden, mask, weight, bias)
    _, ref = reference.pool_classify(hidden, mask, weight, bias)
    torch.testing.assert_close(probs, ref, atol=2e-3, rtol=2e-3)


def test_pool_classify_rejects_bad_inputs(triton_ops):
    hidden, mask, weight, bias = _inputs(2, 4, 8, 3, seed=1)
    with pytest.raises(ValueError):
        triton_ops.pool_classify.pool_classify(hidden, mask[:, :3], weight, bias)
    with pytest.raises(ValueError):
        triton_ops.pool_classify.pool_classify(hidden, mask, weight, bias, temperature=0.0)
    with pytest.raises(ValueError):
        reference.pool_classify(hidden, mask, weight, bias, temperature=-1.0)
