"""A radix tree over token sequences that knows which prompts pass through each node.

Used twice per tenant by template induction: over prompts (prefix side) and over reversed
prompts (suffix side). Edges hold token runs, so a system prompt shared by every request is one
edge, compared with one list comparison. Each node keeps the set of prompt ids in its subtree:
its size is the count the divergence rules need, and the sets let a prompt be removed when it
leaves the sliding window. Nodes emptied by removals are dropped (unary chains are not merged
back; that only costs a little memory).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence


class TrieNode:
    __slots__ = ("edge", "children", "members")

    def __init__(self, edge: array, members: set[int] | None = None) -> None:
        self.edge = edge
        """Token run (array of int32) from the parent to this node; ``edge[0]`` is this node's key in the parent."""
        self.children: dict[int, TrieNode] = {}
        self.members: set[int] = members if members is not None else set()
        """Prompt ids in this subtree (prompts ending exactly here included)."""

    @property
    def count(self) -> int:
        return len(self.members)


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _as_array(tokens: Sequence[int]) -> array:
    return tokens if isinstance(tokens, array) else array("i", tokens)


class TokenTrie:
    """Radix tree of distinct token sequences, each identified by an int id."""

    def __init__(self) -> None:
        self.root = TrieNode(array("i"))
        self.num_nodes = 1

    def insert(self, pid: int, tokens: Sequence[int], max_leaf_tokens: int | None = None) -> int:
        """Insert; a new leaf keeps at most ``max_leaf_tokens`` (a prompt's unique tail is cut,
        which bounds memory for huge prompts). Returns how many tokens the path now holds."""
        tokens = _as_array(tokens)
        node = self.root
        node.members.add(pid)
        i, n = 0, len(tokens)
        while i < n:
            child = node.children.get(tokens[i])
            if child is None:
                end = n if max_leaf_tokens is None else min(n, i + max_leaf_tokens)
                node.children[tokens[i]] = TrieNode(tokens[i:end], {pid})
                self.num_nodes += 1
                return end
            edge = child.edge
            k = _common_length(edge, tokens[i : i + len(edge)])
            if k < len(edge):  # split the edge at the first difference
                mid = TrieNode(edge[:k], set(child.members))
                child.edge = edge[k:]
                mid.children[child.edge[0]] = child
                node.children[tokens[i]] = mid
                self.num_nodes += 1
                child = mid
            child.members.add(pid)
            node = child
            i += k
        return n

    def remove(self, pid: int, tokens: Sequence[int]) -> None:
        tokens = _as_array(tokens)
        node = self.root
        node.members.discard(pid)
        i, n = 0, len(tokens)
        while i < n:
            child = node.children.get(tokens[i])
            if child is None:
                return
            child.members.discard(pid)
            if not child.members:
                del node.children[tokens[i]]
                self.num_nodes -= self._subtree_size(child)
                return
            node = child
            i += len(child.edge)

    def _subtree_size(self, node: TrieNode) -> int:
        return 1 + sum(self._subtree_size(c) for c in node.children.values())

    def path(self, tokens: Sequence[int]) -> list[tuple[TrieNode, int]]:
        """Nodes on the path of an inserted sequence with the token depth at each node's end."""
        tokens = _as_array(tokens)
        out = [(self.root, 0)]
        node, i, n = self.root, 0, len(tokens)
        while i < n:
            child = node.children.get(tokens[i])
            if child is None:
                break
            i += len(child.edge)
            out.append((child, min(i, n)))
            node = child
        return out

    def memory_bytes(self) -> int:
        """Rough estimate (node objects, edges, member-set entries)."""
        total = 0
        stack = [self.root]
        while stack:
            node = stack.pop()
            total += 120 + 8 * len(node.edge) + 64 + sys.getsizeof(node.members) + 80 * len(node.children)
            stack.extend(node.children.values())
        return total
