"""Native (C) block hashing vs the pure-Python path vs vLLM's own hash_block_tokens."""

from __future__ import annotations

import hashlib
import random

import pytest

from poodle_vllm import native

needs_native = pytest.mark.skipif(
    not native.HAS_NATIVE, reason="poodle_vllm._native not built or disabled (POODLE_NATIVE=0)"
)

# Every pickle int encoding: BININT1, BININT2, BININT (incl. negatives), LONG1 (both signs).
EDGE_INTS = [
    0,
    1,
    255,
    256,
    65535,
    65536,
    151643,
    2**31 - 1,
    2**31,
    2**32,
    2**40,
    2**63 - 1,
    -1,
    -128,
    -129,
    -256,
    -(2**31),
    -(2**31) - 1,
    -(2**40),
    -(2**63),
]


def _vllm_chain(kv, sha256, tokens, block_size):
    parent, out = None, []
    for i in range(len(tokens) // block_size):
        parent = kv.hash_block_tokens(sha256, parent, tokens[i * block_size : (i + 1) * block_size])
        out.append(bytes(parent))
    return out


@needs_native
@pytest.mark.parametrize("data", [b"", b"a", b"x" * 55, b"x" * 56, b"x" * 64, bytes(range(256)) * 9])
def test_embedded_sha256_matches_hashlib(data):
    assert native._native.sha256(data) == hashlib.sha256(data).digest()


def _edge_tokens(block_size: int) -> list[int]:
    rng = random.Random(block_size)
    return [rng.choice(EDGE_INTS) for _ in range(block_size * 6 + 3)]


@needs_native
@pytest.mark.parametrize("block_size", [1, 2, 3, 4, 16, 17])
def test_native_and_python_agree(block_size):
    tokens = _edge_tokens(block_size)
    py = native.block_hashes(tokens, block_size, use_native=False)
    assert len(py) == len(tokens) // block_size
    assert native.block_hashes(tokens, block_size, use_native=True) == py


@pytest.mark.slow  # importing vLLM takes 10-40 s on the shared 2-core host
def test_python_native_and_vllm_agree(monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    kv = pytest.importorskip("vllm.v1.core.kv_cache_utils")
    from vllm.utils.hashing import sha256

    kv.init_none_hash(sha256)
    assert native.none_hash() == kv.NONE_HASH
    for block_size in (1, 3, 16, 17):
        tokens = _edge_tokens(block_size)
        py = native.block_hashes(tokens, block_size, use_native=False)
        assert py == _vllm_chain(kv, sha256, tokens, block_size)
        if native.HAS_NATIVE:
            assert native.block_hashes(tokens, block_size, use_native=True) == py
    monkeypatch.setenv("PYTHONHASHSEED", "123")
    assert native.none_hash() == native.none_hash("123") != kv.NONE_HASH


@needs_native
def test_numpy_and_array_inputs_match_lists():
    np = pytest.importorskip("numpy")
    tokens = list(range(5000, 5000 + 100))
    want = native.block_hashes_py(tokens, 16)
    for dtype in (np.int64, np.int32, np.uint16, np.uint32):
        assert native.block_hashes(np.array(tokens, dtype=dtype), 16, use_native=True) == want
    assert native.block_hashes(tuple(tokens), 16, use_native=True) == want


def test_flat_layout_matches_per_request():
    rng = random.Random(0)
    reqs = [[rng.randrange(0, 50000) for _ in range(rng.randrange(0, 70))] for _ in range(25)]
    tokens = [t for r in reqs for t in r]
    offsets = [0]
    for r in reqs:
        offsets.append(offsets[-1] + len(r))
    want = b"".join(h for r in reqs for h in native.block_hashes_py(r, 16))
    assert native.block_hashes_flat(tokens, offsets, 16, use_native=False) == want
    if native.HAS_NATIVE:
        assert native.block_hashes_flat(tokens, offsets, 16, use_native=True) == want
    assert [len(x) for x in native.block_hashes_many(reqs, 16)] == [len(r) // 16 for r in reqs]


def test_none_hash_is_sha256_of_pickled_seed(monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    import pickle

    assert native.none_hash() == hashlib.sha256(pickle.dumps("vllm-none-hash", protocol=5)).digest()


def test_custom_parent_and_extra_keys_fall_back_to_python():
    tokens = list(range(64))
    parent = b"p" * 300  # > 255 bytes: BINBYTES instead of SHORT_BINBYTES
    want = native.block_hashes_py(tokens, 16, parent)
    assert native.block_hashes(tokens, 16, parent) == want
    extra = [(("cache_salt", "s1"),), None, None, None]
    salted = native.block_hashes(tokens, 16, extra_keys=extra)
    assert salted == native.block_hashes_py(tokens, 16, extra_keys=extra)
    assert salted[0] != native.block_hashes(tokens, 16)[0]


def test_oversized_block_falls_back_and_bad_input_raises():
    big = [2**31 + 5] * 14000  # pickle > 64 KiB: CPython splits frames; native refuses
    assert native.block_hashes(big, 14000) == native.block_hashes_py(big, 14000)
    with pytest.raises(ValueError):
        native.block_hashes([1, 2, 3], 0)
    with pytest.raises(ValueError):
        native.block_hashes_flat([1, 2, 3], [0, 5], 2)
    if native.HAS_NATIVE:
        with pytest.raises(TypeError):
            native._native.block_hashes([1, "a"], 1, b"x")
        # numpy scalars are not exact ints: the wrapper falls back to Python.
        np = pytest.importorskip("numpy")
        assert native.block_hashes(list(np.arange(32)), 16) == native.block_hashes_py(list(range(32)), 16)


def test_matches_core_hashing_and_int64_form(monkeypatch):
    hashing = pytest.importorskip("poodle_vllm.core.hashing")
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    rng = random.Random(5)
    reqs = [[rng.randrange(0, 151_000) for _ in range(rng.randrange(0, 90))] for _ in range(12)]
    offsets = [0]
    for r in reqs:
        offsets.append(offsets[-1] + len(r))
    flat = native.block_hashes_flat([t for r in reqs for t in r], offsets, 16)
    want = [h for r in reqs for h in hashing.block_hash_chain(r, 16)]
    assert flat == b"".join(want)
    assert native.digests_to_uint64(flat).tolist() == [hashing.hash_to_int64(h) for h in want]
