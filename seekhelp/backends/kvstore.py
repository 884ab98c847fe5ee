"""Key/value caches of earlier token sequences, looked up by the longest common prefix of token ids.

An entry holds the per-layer keys and values (each `[1, heads, n, head_dim]`) of exactly the token ids it is
stored under. A later prompt whose ids start with the first `m` ids of an entry can skip those `m` tokens in the
prompt pass: the first `m` columns of the entry are the same keys and values the model would compute again.
Lookups walk a token trie, so their cost grows with the prompt's length, not with the number of entries.

Memory is bounded by a cap on the stored tokens (least recently used entries go first). Entries are only valid
for the weights that computed them: `clear()` on every model swap.
"""

import itertools
from collections import OrderedDict
from dataclasses import dataclass

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # one (keys, values) pair per layer


@dataclass
class Entry:
    key: int
    ids: tuple[int, ...]
    kv: KV
    kind: str  # "prefix" (a shared system prompt) or "turn" (one conversation after one generated turn)

    def __len__(self) -> int:
        return len(self.ids)


class _Node:
    __slots__ = ("kids", "owners")

    def __init__(self):
        self.kids: dict[int, _Node] = {}
        self.owners: set[int] = set()  # keys of the entries whose ids pass through this node


class KVStore:
    """LRU of KV entries with a cap in tokens and longest-prefix lookup."""

    def __init__(self, max_tokens: int = 65536):
        self.max_tokens = max_tokens
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._root = _Node()
        self._keys = itertools.count()
        self.tokens = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._root = _Node()
        self.tokens = 0

    def lookup(self, ids: list[int]) -> tuple[Entry | None, int]:
        """The entry sharing the longest prefix with `ids`, and the length of that prefix (0: none)."""
        node, depth = self._root, 0
        for t in ids:
            nxt = node.kids.get(t)
            if nxt is None:
                break
            node, depth = nxt, depth + 1
        if depth == 0:
            return None, 0
        key = max(node.owners)  # any owner holds the same ids up to `depth`; the newest is the least stale
        self._entries.move_to_end(key)
        return self._entries[key], depth

    def put(self, ids: list[int], kv: KV, kind: str = "turn", replaces: Entry | None = None) -> Entry | None:
        """Store `kv` under `ids` (the KV must cover exactly these ids). `replaces`: an entry of the same
        conversation that `ids` extend; it is dropped, as every prompt it could serve the new entry serves too."""
        if not ids or len(ids) > self.max_tokens:
            return None
        same = self._exact(ids)
        if same is not None:  # already stored (e.g. two samples that ended alike): keep one copy
            self._entries.move_to_end(same.key)
            return same
        if replaces is not None and replaces.kind == "turn" and replaces.key in self._entries \
                and len(replaces) <= len(ids) and tuple(ids[:len(replaces)]) == replaces.ids:
            self._remove(replaces.key)
        entry = Entry(next(self._keys), tuple(ids), kv, kind)
        node = self._root
        for t in entry.ids:
            nxt = node.kids.get(t)
            if nxt is None:
                nxt = node.kids[t] = _Node()
            nxt.owners.add(entry.key)
            node = nxt
        self._entries[entry.key] = entry
        self.tokens += len(entry)
        while self.tokens > self.max_tokens:
            self._remove(next(iter(self._entries)))
            self.evicted += 1
        return entry

    def _exact(self, ids: list[int]) -> Entry | None:
        node = self._root
        for t in ids:
            node = node.kids.get(t)
            if node is None:
                return None
        for key in node.owners:
            if len(self._entries[key]) == len(ids):
                return self._entries[key]
        return None

    def _remove(self, key: int) -> None:
        entry = self._entries.pop(key)
        self.tokens -= len(entry)
        node = self._root
        for t in entry.ids:
            nxt = node.kids[t]
            nxt.owners.discard(key)
            if not nxt.owners:
                del node.kids[t]  # nothing else passes through: drop the whole branch
                return
            node = nxt


def common_prefix_len(rows: list[list[int]]) -> int:
    """Length of the token-id prefix every row shares (both engines' shared system-prompt prefix)."""
    first, n = rows[0], min(len(r) for r in rows)
    for r in rows[1:]:
        i = 0
        while i < n and r[i] == first[i]:
            i += 1
        n = i
    return n
