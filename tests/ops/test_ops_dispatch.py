"""Backend selection: auto / env override / set_backend, and both paths agreeing."""

from __future__ import annotations

import pytest
import torch

from poodle_vllm.ops import dispatch, reference

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"


@pytest.fixture(autouse=True)
def _reset_backend(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    dispatch.set_backend(None)
    yield
    dispatch.set_backend(None)


def test_auto_picks_torch_on_cpu_and_triton_on_cuda():
    assert dispatch.resolve_backend("cpu") == "torch"
    expected = "triton" if dispatch.HAS_TRITON else "torch"
    assert dispatch.resolve_backend("cuda") == expected


def test_env_var_and_override(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "torch")
    assert dispatch.resolve_backend("cuda") == "torch"
    monkeypatch.setenv(dispatch.ENV_VAR, "bogus")
    with pytest.raises(ValueError):
        dispatch.requested_backend()
    with dispatch.use_backend("torch"):
        assert dispatch.resolve_backend("cuda") == "torch"
    with pytest.raises(ValueError):
        dispatch.set_backend("cuda-graph")


def test_cpu_default_runs_reference():
    h, m, w = torch.randn(2, 3, 8), torch.ones(2, 3), torch.randn(4, 8)
    got = dispatch.pool_classify(h, m, w, None, 1.5)
    ref = reference.pool_classify(h, m, w, None, 1.5)
    assert torch.equal(got[1], ref[1])


def test_forced_triton_agrees_with_torch(triton_ops):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 5, 16, generator=g).to(DEVICE)
    m = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]]).to(DEVICE)
    w, b = torch.randn(4, 16, generator=g).to(DEVICE), torch.randn(4, generator=g).to(DEVICE)
    feats = torch.randn(2, 30, 10, generator=g).to(DEVICE)
    labels = torch.randint(0, 3, (30,), generator=g).to(DEVICE)
    with dispatch.use_backend("torch"):
        ref_p = dispatch.pool_classify(h, m, w, b)[1]
        ref_s = dispatch.knn_proxy_scores(feats, labels, k=3)
    with dispatch.use_backend("triton"):
        got_p = dispatch.pool_classify(h, m, w, b)[1]
        got_s = dispatch.knn_proxy_scores(feats, labels, k=3)
    torch.testing.assert_close(got_p, ref_p, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_s, ref_s)


def test_stack_padded_features_keeps_distances():
    a, b = torch.randn(10, 4), torch.randn(10, 7)
    x = dispatch.stack_padded_features([a, b])
    assert x.shape == (2, 10, 7)
    d_a, _ = reference.knn_topk(a[None], 3)
    d_x, _ = reference.knn_topk(x, 3)
    torch.testing.assert_close(d_x[0], d_a[0])
    with pytest.raises(ValueError):
        dispatch.stack_padded_features([a, torch.randn(9, 4)])


@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU error path")
def test_compiled_kernel_on_cpu_tensor_raises_clearly():
    from poodle_vllm.ops.triton._common import check_launchable

    class FakeJit:  # a compiled (non-interpreted) kernel object
        pass

    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        check_launchable(FakeJit(), torch.zeros(1))
