"""Poodle's block hashes equal vLLM 0.32's own (this test imports vLLM; the module under test does not)."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from poodle_vllm.core.hashing import (
    block_hash_chain,
    block_hash_chain_int64,
    hash_to_int64,
    none_hash,
)

kv = pytest.importorskip("vllm.v1.core.kv_cache_utils")
from vllm.lora.request import LoRARequest  # noqa: E402
from vllm.sampling_params import SamplingParams  # noqa: E402
from vllm.utils.hashing import get_hash_fn_by_name  # noqa: E402
from vllm.v1.request import Request  # noqa: E402


def _vllm_chain(token_ids, block_size, algo="sha256", cache_salt=None, lora=None):
    fn = get_hash_fn_by_name(algo)
    kv.init_none_hash(fn)
    hasher = kv.get_request_block_hasher(block_size, fn)
    req = Request(
        request_id="r",
        prompt_token_ids=list(token_ids),
        sampling_params=SamplingParams(max_tokens=1),
        pooling_params=None,
        lora_request=lora,
        cache_salt=cache_salt,
        block_hasher=hasher,
    )
    return list(req.block_hashes)


def _sequences():
    rng = random.Random(0)
    yield [rng.randrange(49152) for _ in range(100)]
    yield list(range(64))  # exactly two blocks of 32
    yield [5] * 31  # shorter than a block: no full block
    yield [rng.randrange(10) for _ in range(257)]


@pytest.mark.parametrize("algo", ["sha256", "sha256_cbor"])
@pytest.mark.parametrize("block_size", [16, 32])
def test_chain_equals_vllm(algo, block_size, monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    for ids in _sequences():
        expect = _vllm_chain(ids, block_size, algo)
        assert block_hash_chain(ids, block_size, hash_algo=algo) == expect
        assert len(expect) == len(ids) // block_size


def test_cache_salt_and_lora_equal_vllm(monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    ids = list(range(1000, 1100))
    salted = _vllm_chain(ids, 32, cache_salt="tenant-a")
    assert block_hash_chain(ids, 32, cache_salt="tenant-a") == salted
    plain = block_hash_chain(ids, 32)
    # the salt is in the first block only, but the chain carries it into every later block
    assert all(a != b for a, b in zip(salted, plain, strict=True))
    lora = LoRARequest(lora_name="sql", lora_int_id=1, lora_path="/adapters/sql")
    both = _vllm_chain(ids, 32, cache_salt="s", lora=lora)
    assert block_hash_chain(ids, 32, cache_salt="s", lora_name="sql", lora_path="/adapters/sql") == both
    only_lora = _vllm_chain(ids, 32, lora=lora)
    assert block_hash_chain(ids, 32, lora_name="sql", lora_path="/adapters/sql") == only_lora
    assert block_hash_chain(ids, 32, lora_name="sql", lora_path="/other") != only_lora


def test_int64_equals_kv_event_form(monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    monkeypatch.setenv("VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES", "1")
    ids = list(range(70))
    chain = block_hash_chain(ids, 32)
    assert [kv.maybe_convert_block_hash(h) for h in chain] == [hash_to_int64(h) for h in chain]
    assert block_hash_chain_int64(ids, 32) == [hash_to_int64(h) for h in chain]
    assert all(0 <= v < 2**64 for v in block_hash_chain_int64(ids, 32))


def test_pythonhashseed_and_xxhash_seed(monkeypatch):
    ids = list(range(96))
    monkeypatch.setenv("PYTHONHASHSEED", "123")
    assert none_hash() != none_hash(seed="vllm-none-hash")
    assert block_hash_chain(ids, 32) == _vllm_chain(ids, 32)
    pytest.importorskip("xxhash")
    assert block_hash_chain(ids, 32, hash_algo="xxhash") == _vllm_chain(ids, 32, "xxhash")
    monkeypatch.delenv("PYTHONHASHSEED")
    with pytest.raises(ValueError, match="random per-process seed"):
        block_hash_chain(ids, 32, hash_algo="xxhash")
    assert block_hash_chain(ids, 32, hash_algo="xxhash", none_hash_seed="7") != block_hash_chain(
        ids, 32, hash_algo="xxhash", none_hash_seed="8"
    )


def test_hashing_module_does_not_import_vllm_or_torch():
    code = (
        "import sys, poodle_vllm.core.hashing as h; h.block_hash_chain(list(range(64)), 32);"
        "print(any(m == 'vllm' or m.startswith(('vllm.', 'torch')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
