"""The block-hash prefix tree: counts, divergence, decay, bounded memory."""

from __future__ import annotations

import random

from poodle_vllm.core.hashing import block_hash_chain_int64
from poodle_vllm.core.prefix_index import PrefixIndex

SYSTEM = list(range(1, 33))  # exactly one block of 32


def _prompt(rng, instruction):
    return SYSTEM + instruction + [rng.randrange(1000, 9000) for _ in range(64)]


def test_counts_distinct_requests_and_finds_the_deepest_shared_chains():
    rng = random.Random(0)
    index = PrefixIndex.create_simulated(block_size=32)
    a, b = list(range(100, 132)), list(range(200, 232))  # one block each
    chains = [index.insert_tokens(_prompt(rng, a if i % 2 else b)) for i in range(40)]
    assert chains[0] == block_hash_chain_int64(_prompt(random.Random(0), b), 32)  # vLLM's hashes
    assert 39.5 < index.count(chains[0][0]) <= 40  # 40 requests, barely decayed (half-life 4096)
    assert index.shared_depth(chains[1], 8) == 2 and index.shared_depth(chains[0], 8) == 2
    cands = index.candidates(min_requests=8)
    # two instructions behind one system prompt: two chains of depth 2, not the system block
    assert [c.depth for c in cands] == [2, 2]
    assert {c.block_hash for c in cands} == {chains[0][1], chains[1][1]}
    assert index.node(chains[0][0]).children == 2


def test_cache_salt_separates_chains():
    index = PrefixIndex.create_simulated(block_size=32)
    ids = SYSTEM * 3
    assert index.insert_tokens(ids, cache_salt="a") != index.insert_tokens(ids, cache_salt="b")
    assert index.candidates(min_requests=2) == []


def test_counts_decay_with_a_half_life():
    index = PrefixIndex(block_size=32, half_life=10)
    chain = index.insert_tokens(SYSTEM)
    for i in range(10):
        index.insert_chain([10_000 + i])
    assert abs(index.count(chain[0]) - 0.5) < 1e-9


def test_memory_is_bounded_by_pruning_lru_leaves():
    rng = random.Random(1)
    index = PrefixIndex.create_simulated(block_size=16, max_nodes=200)
    for _ in range(300):
        index.insert_tokens(SYSTEM + [rng.randrange(50_000) for _ in range(64)])
    assert len(index) <= 200 and index.pruned > 0
    # the shared prefix survives: it is touched by every request, so it is never the LRU leaf
    shared = block_hash_chain_int64(SYSTEM, 16)
    assert all(index.count(h) > 100 for h in shared)
    # every surviving node's parent survives too
    for h in list(index._nodes):
        parent = index.node(h).parent
        assert parent is None or index.node(parent) is not None
    assert 0 < index.memory_bytes() < 200 * 1000
