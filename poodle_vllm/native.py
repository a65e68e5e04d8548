"""vLLM-compatible prefix-cache block hashes: native C fast path + pure-Python fallback.

vLLM 0.32 (``v1/core/kv_cache_utils.hash_block_tokens`` with the default ``sha256``
``prefix_caching_hash_algo``) hashes each full block as::

    sha256(pickle.dumps((parent_hash, tuple(block_token_ids), extra_keys), protocol=5))

chained from ``NONE_HASH = sha256(pickle.dumps(seed))`` where ``seed`` is
``$PYTHONHASHSEED`` or ``"vllm-none-hash"``.  ``poodle analyze`` recomputes these for
millions of logged requests; the C extension ``poodle_vllm._native`` (built from
``csrc/block_hash.c`` by ``setup.py``) does it without a Python object per token.

* ``HAS_NATIVE``: the extension imported (and ``POODLE_NATIVE`` is not ``0``).
* Every function takes ``use_native=None`` (auto), ``True`` (require it) or ``False``.
* Blocks with ``extra_keys`` (LoRA, multimodal, cache salt) and blocks whose pickle
  would exceed one 64 KiB frame always take the Python path.

This module imports neither torch nor vllm, so ``core/`` may use it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterable, Sequence
from typing import Any

DEFAULT_NONE_HASH_SEED = "vllm-none-hash"
"""vLLM's fixed NONE_HASH seed for cryptographic hashes when PYTHONHASHSEED is unset."""

HASH_BYTES = 32

try:  # NOTE: optional; a pure-Python install has no compiler-built module.
    from poodle_vllm import _native  # type: ignore[attr-defined]

    HAS_NATIVE = os.environ.get("POODLE_NATIVE", "1") != "0"
except ImportError:  # pragma: no cover - depends on the build
    _native = None
    HAS_NATIVE = False


def _want_native(use_native: bool | None) -> bool:
    if use_native is None:
        return HAS_NATIVE
    if use_native and _native is None:
        raise RuntimeError("poodle_vllm._native is not built; run `python setup.py build_ext --inplace`")
    return bool(use_native)


def none_hash(seed: str | None = None) -> bytes:
    """vLLM's ``NONE_HASH`` (parent of a request's first block) for the sha256 algorithm.

    ``seed=None`` resolves like vLLM: ``$PYTHONHASHSEED`` if set, else ``"vllm-none-hash"``.
    """
    if seed is None:
        seed = os.environ.get("PYTHONHASHSEED", DEFAULT_NONE_HASH_SEED)
    return hashlib.sha256(pickle.dumps(seed, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def hash_block_py(
    parent: bytes, token_ids: Sequence[int], extra_keys: tuple[Any, ...] | None = None
) -> bytes:
    """One block hash exactly as vLLM's ``hash_block_tokens(sha256, parent, ids, extra_keys)``."""
    key = (parent, tuple(int(t) for t in token_ids), extra_keys)
    return hashlib.sha256(pickle.dumps(key, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def block_hashes_py(
    token_ids: Sequence[int],
    block_size: int,
    parent: bytes | None = None,
    extra_keys: Sequence[tuple[Any, ...] | None] | None = None,
) -> list[bytes]:
    """Pure-Python chained hashes of the full blocks of ``token_ids``.

    Args:
        token_ids: the request's token ids (prompt, or prompt + output).
        block_size: tokens per block (vLLM's ``hash_block_size``, usually the cache block size).
        parent: hash the chain starts from (default ``none_hash()``).
        extra_keys: optional per-block extra keys (``extra_keys[i]`` for block ``i``).
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be > 0, got {block_size}")
    prev = none_hash() if parent is None else parent
    ids = token_ids.tolist() if hasattr(token_ids, "tolist") else token_ids
    out: list[bytes] = []
    for b in range(len(ids) // block_size):
        extra = extra_keys[b] if extra_keys is not None and b < len(extra_keys) else None
        prev = hash_block_py(prev, ids[b * block_size : (b + 1) * block_size], extra)
        out.append(prev)
    return out


def _split(digests: bytes) -> list[bytes]:
    return [digests[i : i + HASH_BYTES] for i in range(0, len(digests), HASH_BYTES)]


def block_hashes(
    token_ids: Sequence[int],
    block_size: int,
    parent: bytes | None = None,
    extra_keys: Sequence[tuple[Any, ...] | None] | None = None,
    *,
    use_native: bool | None = None,
) -> list[bytes]:
    """Chained vLLM block hashes of the full blocks of ``token_ids`` (native when available).

    ``token_ids`` may be a list/tuple of ints or a 1-D integer array (numpy, array.array).
    """
    prev = none_hash() if parent is None else parent
    if extra_keys is None or all(k is None for k in extra_keys):
        if _want_native(use_native):
            try:
                return _split(_native.block_hashes(token_ids, block_size, prev))
            except (TypeError, ValueError, OverflowError):
                if block_size <= 0:
                    raise
                # Non-int elements (e.g. numpy scalars in a list) or oversized blocks.
        extra_keys = None
    return block_hashes_py(token_ids, block_size, prev, extra_keys)


def block_hashes_flat(
    tokens: Sequence[int],
    offsets: Sequence[int],
    block_size: int,
    parent: bytes | None = None,
    *,
    use_native: bool | None = None,
) -> bytes:
    """Block hashes of many requests at once, as one ``bytes`` of 32-byte digests.

    Request ``i`` is ``tokens[offsets[i]:offsets[i + 1]]`` (Arrow list layout: pass the
    list array's flattened values and offsets).  The result holds each request's
    ``len_i // block_size`` hashes in order.
    """
    prev = none_hash() if parent is None else parent
    if _want_native(use_native):
        try:
            return bytes(_native.block_hashes_flat(tokens, offsets, block_size, prev))
        except (TypeError, OverflowError):
            pass
        except ValueError:
            if block_size <= 0 or len(offsets) < 1:
                raise
    toks = tokens.tolist() if hasattr(tokens, "tolist") else list(tokens)
    offs = offsets.tolist() if hasattr(offsets, "tolist") else list(offsets)
    if len(offs) < 1:
        raise ValueError("offsets needs at least one entry")
    parts: list[bytes] = []
    for i in range(len(offs) - 1):
        lo, hi = int(offs[i]), int(offs[i + 1])
        if lo < 0 or hi < lo or hi > len(toks):
            raise ValueError("offsets must be non-decreasing and within tokens")
        parts.extend(block_hashes_py(toks[lo:hi], block_size, prev))
    return b"".join(parts)


def digests_to_uint64(digests: bytes) -> Any:
    """Lower 64 bits of each 32-byte hash as a numpy ``uint64`` array.

    Same value as ``core.hashing.hash_to_int64`` / vLLM's ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES``
    form (``int.from_bytes(h, "big") & (2**64 - 1)``), i.e. the form in the request log.
    """
    import numpy as np

    if len(digests) % HASH_BYTES:
        raise ValueError(f"digest buffer length {len(digests)} is not a multiple of {HASH_BYTES}")
    return np.frombuffer(digests, dtype=">u8").reshape(-1, HASH_BYTES // 8)[:, -1].astype(np.uint64)


def block_hashes_many(
    requests: Iterable[Sequence[int]],
    block_size: int,
    parent: bytes | None = None,
    *,
    use_native: bool | None = None,
) -> list[list[bytes]]:
    """Chained block hashes for each request (one list of 32-byte hashes per request)."""
    prev = none_hash() if parent is None else parent
    return [block_hashes(r, block_size, prev, use_native=use_native) for r in requests]


if __name__ == "__main__":
    ids = list(range(1000, 1100))
    hs = block_hashes(ids, 16)
    print(f"HAS_NATIVE={HAS_NATIVE}; {len(hs)} blocks; first={hs[0].hex()[:16]}...")
    assert hs == block_hashes_py(ids, 16)
