"""vLLM 0.32's prefix-cache block hashes, recomputed without importing vLLM.

vLLM hashes a prompt in full blocks of ``block_size`` tokens; each block's hash covers its
parent's hash, its own token ids and "extra keys" (``vllm/v1/core/kv_cache_utils.py``)::

    hash_block_tokens(hash_fn, parent, tokens, extra_keys)
        = hash_fn((parent or NONE_HASH, tuple(tokens), extra_keys))

* ``NONE_HASH = hash_fn(seed)`` where the seed is ``PYTHONHASHSEED`` when set, otherwise the
  fixed ``"vllm-none-hash"`` for sha256 / sha256_cbor and a *random per-process* seed for the
  xxhash variants (so xxhash chains are only reproducible with an explicit seed).
* extra keys (``generate_block_hash_extra_keys``, text-only prompts): ``("lora", name, path)``
  on every block of a LoRA request, then ``("cache_salt", salt)`` on the first block only;
  ``None`` when there are none.
* ``sha256(x) = hashlib.sha256(pickle.dumps(x, HIGHEST_PROTOCOL))``; ``sha256_cbor`` uses
  ``cbor2.dumps(x, canonical=True)``; ``xxhash`` / ``xxhash_cbor`` use ``xxh3_128``.

KV events publish the lower 64 bits of each hash (:func:`hash_to_int64`), as do Poodle's logs.
Multimodal and prompt-embedding keys are not reproduced: Poodle only detects text tasks.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_NONE_HASH_SEED = "vllm-none-hash"
"""vLLM's fixed NONE_HASH seed for cryptographic hashes when PYTHONHASHSEED is unset."""

HASH_ALGOS = ("sha256", "sha256_cbor", "xxhash", "xxhash_cbor")
_INT64_MASK = (1 << 64) - 1


def _sha256(obj: Any) -> bytes:
    return hashlib.sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def _sha256_cbor(obj: Any) -> bytes:
    import cbor2  # a vLLM dependency, imported lazily: only the cbor algos need it

    return hashlib.sha256(cbor2.dumps(obj, canonical=True)).digest()


def _xxhash(obj: Any) -> bytes:
    import xxhash

    return xxhash.xxh3_128_digest(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _xxhash_cbor(obj: Any) -> bytes:
    import cbor2
    import xxhash

    return xxhash.xxh3_128_digest(cbor2.dumps(obj, canonical=True))


_HASH_FNS: dict[str, Callable[[Any], bytes]] = {
    "sha256": _sha256,
    "sha256_cbor": _sha256_cbor,
    "xxhash": _xxhash,
    "xxhash_cbor": _xxhash_cbor,
}


def get_hash_fn(hash_algo: str) -> Callable[[Any], bytes]:
    """The object hash vLLM uses for ``--prefix-caching-hash-algo hash_algo``."""
    try:
        return _HASH_FNS[hash_algo]
    except KeyError:
        raise ValueError(
            f"unknown prefix-caching hash algo {hash_algo!r}; valid: {list(HASH_ALGOS)}"
        ) from None


def resolve_none_hash_seed(hash_algo: str, seed: str | None = None) -> str:
    """The seed vLLM derives NONE_HASH from: ``seed``, else PYTHONHASHSEED, else the fixed default.

    For the xxhash algos vLLM draws a random seed per process when PYTHONHASHSEED is unset;
    those chains cannot be reproduced, so an explicit seed is required and its absence raises.
    """
    if seed is not None:
        return seed
    env = os.environ.get("PYTHONHASHSEED")
    if env is not None:
        return env
    if hash_algo.startswith("xxhash"):
        raise ValueError(
            f"{hash_algo} block hashes use a random per-process seed in vLLM unless PYTHONHASHSEED is "
            "set; pass none_hash_seed (the engine's PYTHONHASHSEED) to reproduce them"
        )
    return DEFAULT_NONE_HASH_SEED


@functools.lru_cache(maxsize=16)
def _none_hash_of(hash_algo: str, resolved_seed: str) -> bytes:
    return get_hash_fn(hash_algo)(resolved_seed)


def none_hash(hash_algo: str = "sha256", seed: str | None = None) -> bytes:
    """vLLM's NONE_HASH: the parent hash of every chain's first block."""
    # NOTE: resolved on every call so a changed PYTHONHASHSEED is honoured; the hash is cached.
    return _none_hash_of(hash_algo, resolve_none_hash_seed(hash_algo, seed))


def block_extra_keys(
    block_index: int, *, cache_salt: str | None = None, lora_name: str | None = None, lora_path: str = ""
) -> tuple[Any, ...] | None:
    """Extra keys of one text-only block, in vLLM's order (LoRA, then the salt on block 0)."""
    keys: list[Any] = []
    if lora_name:
        keys.append(("lora", lora_name, lora_path))
    if block_index == 0 and cache_salt:
        keys.append(("cache_salt", cache_salt))
    return tuple(keys) if keys else None


def hash_block(
    parent: bytes | None,
    block_token_ids: Sequence[int],
    extra_keys: tuple[Any, ...] | None = None,
    *,
    hash_algo: str = "sha256",
    none_hash_seed: str | None = None,
) -> bytes:
    """One block's hash, exactly as ``vllm.v1.core.kv_cache_utils.hash_block_tokens``."""
    if not parent:
        parent = none_hash(hash_algo, none_hash_seed)
    return get_hash_fn(hash_algo)((parent, tuple(block_token_ids), extra_keys))


def block_hash_chain(
    token_ids: Sequence[int],
    block_size: int,
    *,
    hash_algo: str = "sha256",
    cache_salt: str | None = None,
    lora_name: str | None = None,
    lora_path: str = "",
    none_hash_seed: str | None = None,
    max_blocks: int | None = None,
) -> list[bytes]:
    """Hashes of the full blocks of ``token_ids`` (a trailing partial block is not hashed).

    ``lora_path`` is part of vLLM's LoRA key (``LoRARequest.lora_path``, default ``""``); pass the
    adapter path the engine used to match a LoRA request's hashes exactly. ``max_blocks`` stops early (only a prefix is needed).
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    fn = get_hash_fn(hash_algo)
    parent = none_hash(hash_algo, none_hash_seed)
    n_blocks = len(token_ids) // block_size
    if max_blocks is not None:
        n_blocks = min(n_blocks, max_blocks)
    ids = [int(t) for t in token_ids[: n_blocks * block_size]]  # numpy ints would pickle differently
    lora_keys: list[Any] = [("lora", lora_name, lora_path)] if lora_name else []
    out: list[bytes] = []
    for i in range(n_blocks):
        keys = lora_keys + [("cache_salt", cache_salt)] if (i == 0 and cache_salt) else lora_keys
        parent = fn(
            (parent, tuple(ids[i * block_size : (i + 1) * block_size]), tuple(keys) if keys else None)
        )
        out.append(parent)
    return out


def hash_to_int64(h: bytes) -> int:
    """The lower 64 bits of a block hash, as vLLM's KV events (and Poodle's log) carry it."""
    return int.from_bytes(h, "big") & _INT64_MASK


def block_hash_chain_int64(token_ids: Sequence[int], block_size: int, **kwargs: Any) -> list[int]:
    """:func:`block_hash_chain` reduced to 64-bit ints (the form in :class:`RequestRecord`)."""
    return [hash_to_int64(h) for h in block_hash_chain(token_ids, block_size, **kwargs)]
