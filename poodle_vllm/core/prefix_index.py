"""A prefix tree over vLLM block-hash chains that counts how many requests share each prefix.

Each node is one block hash (64-bit int, as in vLLM's KV events and Poodle's log) with its
parent; because vLLM's hashes are chained, a node identifies the whole prefix up to it, so the
tree is a dict keyed by hash plus parent links. A request adds 1 to every node of its chain
(one chain per request, so counts are distinct requests). Counts decay exponentially with a
half-life counted in requests: a prefix that stops recurring fades out (a sliding window
without storing the requests). Memory is bounded by ``max_nodes``: past it the least recently
used *leaves* are pruned. Because a chain touches its nodes from the leaf up, a parent is always
at least as recent as its children, so the LRU end of the order is always a leaf.

Build it from plain token ids with :meth:`PrefixIndex.create_simulated` (same hashes as vLLM).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from poodle_vllm.core.hashing import block_hash_chain_int64


@dataclass(slots=True)
class PrefixNode:
    """One block of a shared prefix."""

    block_hash: int
    parent: int | None
    depth: int
    """1-based block depth: the prefix covers ``depth * block_size`` tokens."""
    count: float = 0.0
    """Distinct requests through this block, decayed to ``stamp``."""
    stamp: int = 0
    """Request clock at the last update of ``count``."""
    children: int = 0


class PrefixIndex:
    """Counts of requests per block-hash prefix; bounded and decaying."""

    def __init__(
        self,
        block_size: int = 32,
        *,
        max_nodes: int = 200_000,
        half_life: float = 4096.0,
        hash_algo: str = "sha256",
    ) -> None:
        if block_size <= 0 or max_nodes <= 0 or half_life <= 0:
            raise ValueError("block_size, max_nodes and half_life must be positive")
        self.block_size = block_size
        self.max_nodes = max_nodes
        self.half_life = float(half_life)
        self.hash_algo = hash_algo
        self._nodes: OrderedDict[int, PrefixNode] = OrderedDict()
        self._decay = 0.5 ** (1.0 / self.half_life)
        self.clock = 0
        """Requests inserted so far."""
        self.pruned = 0
        """Nodes pruned to stay under ``max_nodes``."""

    @classmethod
    def create_simulated(cls, block_size: int = 32, **kwargs) -> PrefixIndex:
        """An index fed with plain token ids (:meth:`insert_tokens`), hashed as vLLM does."""
        return cls(block_size, **kwargs)

    # -- updates -----------------------------------------------------------------------------
    def insert_tokens(
        self, token_ids: Sequence[int], *, cache_salt: str | None = None, lora_name: str | None = None
    ) -> list[int]:
        """Hash ``token_ids`` like vLLM, insert the chain, return the 64-bit hashes."""
        chain = block_hash_chain_int64(
            token_ids, self.block_size, hash_algo=self.hash_algo, cache_salt=cache_salt, lora_name=lora_name
        )
        self.insert_chain(chain)
        return chain

    def insert_chain(self, chain: Sequence[int]) -> int:
        """Count one request through ``chain``; returns how many of its blocks were already known."""
        self.clock += 1
        known = 0
        parent: int | None = None
        nodes = self._nodes
        for depth, h in enumerate(chain, start=1):
            node = nodes.get(h)
            if node is None:
                node = PrefixNode(h, parent, depth, 0.0, self.clock)
                nodes[h] = node
                if parent is not None:
                    nodes[parent].children += 1
            else:
                known += 1
            self._add(node, 1.0)
            parent = h
        # NOTE: touch leaf first, root last, so a parent is never older than its children.
        for h in reversed(chain):
            nodes.move_to_end(h)
        while len(nodes) > self.max_nodes:
            self._prune_oldest_leaf()
        return known

    def _add(self, node: PrefixNode, amount: float) -> None:
        node.count = node.count * self._decay ** (self.clock - node.stamp) + amount
        node.stamp = self.clock

    def _prune_oldest_leaf(self) -> None:
        h, node = self._nodes.popitem(last=False)
        if node.children:  # cannot happen with the touch order above; keep the tree consistent anyway
            self._nodes[h] = node
            self._nodes.move_to_end(h)
            return
        if node.parent is not None and node.parent in self._nodes:
            self._nodes[node.parent].children -= 1
        self.pruned += 1

    # -- queries -----------------------------------------------------------------------------
    def count(self, block_hash: int) -> float:
        """Decayed number of distinct requests whose prompt starts with this block's prefix."""
        node = self._nodes.get(block_hash)
        if node is None:
            return 0.0
        return node.count * self._decay ** (self.clock - node.stamp)

    def node(self, block_hash: int) -> PrefixNode | None:
        return self._nodes.get(block_hash)

    def shared_depth(self, chain: Sequence[int], min_requests: float) -> int:
        """Blocks of ``chain`` shared by at least ``min_requests`` requests (the recurring prefix)."""
        depth = 0
        for h in chain:
            if self.count(h) < min_requests:
                break
            depth += 1
        return depth

    def candidates(self, min_requests: float) -> list[PrefixNode]:
        """Deepest recurring prefixes: nodes with ``>= min_requests`` requests after which the
        requests diverge (no child reaches ``min_requests`` alone)."""
        recurring = {h for h, n in self._nodes.items() if self.count(h) >= min_requests}
        parents = {self._nodes[h].parent for h in recurring}
        return sorted(
            (self._nodes[h] for h in recurring if h not in parents), key=lambda n: (-n.depth, n.block_hash)
        )

    def __len__(self) -> int:
        return len(self._nodes)

    def memory_bytes(self) -> int:
        """Estimate: node objects, their hash ints and the dict entries."""
        if not self._nodes:
            return sys.getsizeof(self._nodes)
        sample = next(iter(self._nodes.values()))
        per_node = sys.getsizeof(sample) + sys.getsizeof(sample.block_hash) + 100  # ~ordered-dict slot
        return sys.getsizeof(self._nodes) + per_node * len(self._nodes)


if __name__ == "__main__":  # a tiny demo: two instructions behind one system prompt, plus noise
    import random

    rng = random.Random(0)
    system = list(range(1, 41))
    sentiment = list(range(100, 120))
    topic = list(range(200, 230))
    index = PrefixIndex.create_simulated(block_size=16, max_nodes=500)
    for i in range(300):
        instruction = sentiment if i % 2 else topic
        index.insert_tokens(system + instruction + [rng.randrange(1000, 5000) for _ in range(40)])
    print(f"nodes={len(index)} pruned={index.pruned} memory~{index.memory_bytes() / 1024:.1f} KiB")
    for node in index.candidates(min_requests=8):
        print(f"recurring prefix: {node.depth} blocks, ~{index.count(node.block_hash):.0f} requests")
