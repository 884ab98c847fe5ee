"""Slot decoding: our own decode loop over a fixed number of rows, refilled as rows finish, with KV caches kept
across calls.

`model.generate` on a static batch runs until its longest row is done, and each call prefills every prompt from
scratch. Here a batch holds at most `slots` rows; when a row ends (a stop string, EOS or `max_new_tokens`) its
slot goes to the next waiting prompt, which is prefilled and written into that slot. Each finished row's keys and
values (prompt + generated tokens) go to a `KVStore` under their token ids, so when the runtime sends the same
conversation back one turn later, only the new tokens (the turn's closing tag, the expert's reply, the next
generation prompt) are prefilled. The store also holds the common prefix of a call's prompts (the system
prompt), computed once. Reuse is decided on token ids alone: the re-rendered prompt is tokenized afresh and only
the longest run of ids that matches an entry exactly is taken from it.

Layout. The batch cache is `[rows, heads, columns, head_dim]`, each row's tokens contiguous and ending at the last
column, the columns before them masked (left padding only). Position ids are counted per row over its unmasked
columns, so each row sees exactly the positions and keys it would see alone. A refilled row that fits in the
current width is written into its slot in place; otherwise the batch is rebuilt once, as wide as its longest row.
Cache layers append each step's keys/values into spare columns instead of concatenating the whole cache. Stop
strings match as in `generate`: the string must overlap the newest token, and may begin in the prompt.

Sampling applies temperature, then the model's `top_k` if its generation config sets one, then `top_p`, as
`generate` does; other generation-config processors (repetition penalty and the like) are not applied.
"""

import time
from collections import deque
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from seekhelp.backends.base import Completion, GenParams, truncate_at_stop
from seekhelp.backends.kvstore import KV, Entry, KVStore, common_prefix_len


@dataclass
class _Row:
    index: int  # position in the caller's list
    prompt: list[int]
    base: Entry | None = None  # the stored conversation this prompt extends, if any
    gen: list[int] = field(default_factory=list)
    t0: float = 0.0


class SlotEngine:
    """Batched greedy or sampled decoding with slot refill and a cross-call KV store (full-attention models)."""

    def __init__(self, model, tokenizer, store: KVStore, stats: dict, slots: int = 32, prefix_cache: bool = True,
                 min_prefix_tokens: int = 32, keep_turns: bool = True):
        self.model, self.tok, self.store, self.stats = model, tokenizer, store, stats
        self.slots, self.prefix_cache, self.min_prefix_tokens = slots, prefix_cache, min_prefix_tokens
        self.keep_turns = keep_turns
        for k in ("prefill_tokens", "prefill_padding", "cached_tokens_reused", "turn_cache_hits", "refills",
                  "refills_in_place", "decode_steps"):
            stats.setdefault(k, 0)

    # ---- the loop ----------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def run(self, prompts: list[list[int]], params: GenParams) -> list[Completion]:
        self._params, self._end = params, self._end_ids()
        self._stop_window = max((len(s) for s in params.stop or []), default=0) + 2  # tokens: ≥ 1 char each
        sampling = bool(params.temperature and params.temperature > 0)
        self._gen = None
        if sampling and params.seed is not None:
            self._gen = torch.Generator(device=self.model.device).manual_seed(params.seed)
        self._top_k = getattr(self.model.generation_config, "top_k", None) if sampling else None
        self._shared_prefix(prompts)
        waiting = deque(sorted(range(len(prompts)), key=lambda i: len(prompts[i])))
        out: list[Completion | None] = [None] * len(prompts)
        self._batch = _Batch()
        while True:
            batch = self._batch
            while waiting and batch.free(self.slots):  # hand every free slot to a waiting prompt, one prompt pass
                new = [_Row(i, prompts[i]) for i in self._take(waiting, batch.free(self.slots))]
                if batch.alive():
                    self.stats["refills"] += len(new)
                n_cache, n_mask, logits = self._prefill(new)
                tokens = self._pick(logits)
                keep = self._advance(list(enumerate(new)), tokens.tolist(), n_cache, n_mask, out)
                if keep:
                    kept = [new[j] for j in keep]
                    self.stats["refills_in_place"] += batch.insert(n_cache, n_mask, tokens, kept, keep)
            if not batch.alive():
                break
            pos = batch.mask.sum(-1, keepdim=True)  # the pending token's position: the row's unmasked columns
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones(batch.mask.shape[0], 1)], dim=1)
            logits = self._forward(batch.pending[:, None], batch.mask, pos, batch.cache)
            self.stats["decode_steps"] += 1
            batch.pending = self._pick(logits)
            tokens = batch.pending.tolist()
            live = [(b, r) for b, r in enumerate(batch.rows) if r is not None]
            running = set(self._advance(live, [tokens[b] for b, _ in live], batch.cache, batch.mask, out))
            for b, _ in live:
                if b not in running:
                    batch.rows[b] = None  # the slot is free for the next waiting prompt
            if not waiting and len(running) < batch.size():
                batch.compact()  # nobody to take the free slots: stop computing them
        self._batch = None
        self.stats["generated_tokens"] += sum(c.extra.pop("generated") for c in out)
        self.stats["calls"] += len(prompts)
        return out  # type: ignore[return-value]

    @staticmethod
    def _take(waiting: deque, n: int) -> list[int]:
        return [waiting.popleft() for _ in range(min(n, len(waiting)))]

    def _advance(self, rows: list[tuple[int, _Row]], tokens: list[int], cache, mask, out: list) -> list[int]:
        """Append each row's new token and finish the rows that are done. `rows`: (batch index, row) pairs.
        Returns the batch indices still running."""
        p, tok, keep = self._params, self.tok, []
        for (b, row), t in zip(rows, tokens, strict=True):
            done = t in self._end
            if not done:
                row.gen.append(t)
                done = len(row.gen) >= p.max_new_tokens
                done = done or (bool(p.stop) and self._stopped(row))
            if not done:
                keep.append(b)
                continue
            text = truncate_at_stop(tok.decode(row.gen, skip_special_tokens=True), p.stop)
            n = len(tok(text, add_special_tokens=False)["input_ids"]) if p.stop else len(row.gen)
            out[row.index] = Completion(text=text, prompt_tokens=len(row.prompt), completion_tokens=n,
                                        latency_s=time.perf_counter() - row.t0, extra={"generated": len(row.gen)})
            if self.keep_turns:
                self._keep(row, cache, mask, b)
        return keep

    def _stopped(self, row: _Row) -> bool:
        """Whether the newest token completes a stop string. Like `generate`'s stop-string criterion, the match
        must overlap that token and may start in the prompt (its last tokens are part of the window)."""
        w = self._stop_window
        window = row.gen[-w:] if len(row.gen) >= w else row.prompt[len(row.gen) - w:] + row.gen
        before = self.tok.decode(window[:-1])
        text = self.tok.decode(window)
        for s in self._params.stop:
            if s in text[max(0, len(before) - len(s) + 1):]:
                return True
        return False

    def _keep(self, row: _Row, cache, mask: torch.Tensor, b: int) -> None:
        """Store the finished row's keys and values under the ids they were computed from."""
        n = int(mask[b].sum())  # a row's columns are always the last n (left padding only)
        keys = torch.stack([layer.keys[b, :, -n:] for layer in cache.layers])  # one block per row, not per layer
        values = torch.stack([layer.values[b, :, -n:] for layer in cache.layers])
        kv = [(keys[i:i + 1], values[i:i + 1]) for i in range(len(cache.layers))]
        ids = (row.prompt + row.gen)[:n]  # the last sampled token was never fed
        self.store.put(ids, kv, kind="turn", replaces=row.base)

    # ---- prompt pass ------------------------------------------------------------------------------------------

    def _shared_prefix(self, prompts: list[list[int]]) -> None:
        """Put the common prefix of this call's prompts into the store once (unless stored already)."""
        if not self.prefix_cache or len(prompts) < 2:
            return
        n = min(common_prefix_len(prompts), min(len(p) for p in prompts) - 1)
        if n < self.min_prefix_tokens:
            return
        ids = prompts[0][:n]
        entry, m = self.store.lookup(ids)
        if m >= n:
            return
        kv = [(k[:, :, :m], v[:, :, :m]) for k, v in entry.kv] if m else None
        cache = _cache(self.model.config, kv)
        mask = torch.ones(1, n, dtype=torch.bool, device=self.model.device)
        suffix = torch.tensor([ids[m:]], device=self.model.device)
        self._forward(suffix, mask, torch.arange(m, n, device=self.model.device)[None], cache)
        self.stats["prefill_tokens"] += n - m
        self.store.put(ids, [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers],
                       kind="prefix")

    def _prefill(self, rows: list[_Row]):
        """One prompt pass for rows joining the batch: each starts from its longest stored prefix.
        Returns (cache, mask, logits of each row's last prompt token).

        The pass runs `width` input columns for every row, `width` being the longest new suffix. A row with a
        shorter suffix takes that many more of its own tokens as input instead of padding (recomputing a few
        reusable ones costs nothing extra), so every row's tokens stay contiguous at the right end of the cache."""
        device, now = self.model.device, time.perf_counter()
        found = []
        for row in rows:
            row.t0 = now
            entry, m = self.store.lookup(row.prompt)
            found.append((entry, min(m, len(row.prompt) - 1)))  # at least one token runs, for its logits
        width = max(len(r.prompt) - m for r, (_, m) in zip(rows, found, strict=True))
        reuse = [max(0, len(r.prompt) - width) for r in rows]  # ≤ m: the input is `width` tokens or the whole prompt
        cached = max(reuse)
        mask = torch.zeros(len(rows), cached + width, dtype=torch.bool)
        ids = torch.full((len(rows), width), self.tok.pad_token_id, dtype=torch.long)
        kv = None
        if cached:
            ref = next(e.kv for (e, _), m in zip(found, reuse, strict=True) if m)
            kv = [(k.new_empty(len(rows), k.shape[1], cached, k.shape[3]),
                   v.new_empty(len(rows), v.shape[1], cached, v.shape[3])) for k, v in ref]
        for b, (row, (entry, _), m) in enumerate(zip(rows, found, reuse, strict=True)):
            suffix = row.prompt[m:]
            mask[b, cached + width - len(row.prompt):] = True  # contiguous: m reused columns, then the suffix
            ids[b, width - len(suffix):] = torch.tensor(suffix)
            for li, (k, v) in enumerate(kv or []):
                k[b, :, :cached - m] = 0  # masked, but must be finite: attention weights 0 times garbage
                v[b, :, :cached - m] = 0
                if m:
                    k[b, :, cached - m:] = entry.kv[li][0][0, :, :m]
                    v[b, :, cached - m:] = entry.kv[li][1][0, :, :m]
            if m and entry.kind == "turn":
                self.stats["turn_cache_hits"] += 1
                row.base = entry
            self.stats["prefill_tokens"] += len(suffix)
            self.stats["prefill_padding"] += width - len(suffix)
            self.stats["cached_tokens_reused"] += m
        mask = mask.to(device)
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, cached:]
        cache = _cache(self.model.config, kv)
        logits = self._forward(ids.to(device), mask, pos, cache)
        self.stats["batches"] += 1
        return cache, mask, logits

    # ---- model step and sampling ------------------------------------------------------------------------------

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                         logits_to_keep=1)
        return out.logits[:, -1].float()

    def _pick(self, logits: torch.Tensor) -> torch.Tensor:
        p = self._params
        if not p.temperature or p.temperature <= 0:
            return logits.argmax(-1)
        x = logits / p.temperature
        if self._top_k and self._top_k < x.shape[-1]:
            kth = torch.topk(x, self._top_k, dim=-1).values[:, -1:]
            x = x.masked_fill(x < kth, float("-inf"))
        if p.top_p is not None and p.top_p < 1.0:
            sorted_x, order = torch.sort(x, dim=-1, descending=True)
            probs = sorted_x.softmax(-1)
            drop = probs.cumsum(-1) - probs >= p.top_p  # the mass before it already reaches top_p
            drop[:, 0] = False
            x = torch.full_like(x, float("-inf")).scatter(1, order, sorted_x.masked_fill(drop, float("-inf")))
        return torch.multinomial(x.softmax(-1), 1, generator=self._gen).squeeze(1)

    def _end_ids(self) -> set[int]:
        """Token ids that end a row (not part of its text): EOS of the model's generation config and the
        tokenizer's EOS and padding (the static path cuts its output at those too)."""
        ends = {self.tok.eos_token_id, self.tok.pad_token_id}
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        ends.update(eos if isinstance(eos, list) else [eos])
        return {e for e in ends if e is not None}


# ---- cache helpers --------------------------------------------------------------------------------------------

def _cache(config, kv: KV | None):
    """A DynamicCache of `_GrowingLayer`s holding `kv` as is (no copy), or an empty one."""
    cache = DynamicCache(config=config)
    cache.layers = [_GrowingLayer() for _ in cache.layers]
    if kv is not None:
        for layer, (k, v) in zip(cache.layers, kv, strict=True):
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
    return cache


def supports(model) -> bool:
    """The slot engine handles models whose every layer keeps a plain full-attention cache (no sliding window,
    no linear-attention state)."""
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


class _GrowingLayer(DynamicLayer):
    """A full-attention cache layer that appends into spare columns instead of concatenating, so a decode step does
    not copy the whole cache. `keys`/`values` are views of the first columns of the buffers; when the engine
    replaces them (rows removed or merged, columns trimmed), the next append starts new buffers."""

    spare = 64

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.keys, self.values = key_states[:, :, :0], value_states[:, :, :0]
        n, s = self.keys.shape[-2], key_states.shape[-2]
        buf = getattr(self, "_buf", None)
        if buf is None or not (_views_start(self.keys, buf[0]) and _views_start(self.values, buf[1])) \
                or n + s > buf[0].shape[-2]:
            shape = list(self.keys.shape)
            shape[-2] = n + s + self.spare
            buf = (self.keys.new_empty(shape), self.values.new_empty(shape))
            buf[0][:, :, :n], buf[1][:, :, :n] = self.keys, self.values
            self._buf = buf
        buf[0][:, :, n:n + s], buf[1][:, :, n:n + s] = key_states, value_states
        self.keys, self.values = buf[0][:, :, :n + s], buf[1][:, :, :n + s]
        return self.keys, self.values


def _views_start(t: torch.Tensor, buf: torch.Tensor) -> bool:
    """Whether `t` is a view of the first columns of `buf` (same rows, same strides)."""
    return t.data_ptr() == buf.data_ptr() and t.shape[:2] == buf.shape[:2] and t.stride() == buf.stride()


class _Batch:
    """The running rows: `rows[b]` is the row in slot b (None: finished, free), its keys and values in row b of
    every cache layer, right-aligned (a row's tokens are the last `mask[b].sum()` columns)."""

    def __init__(self):
        self.rows: list[_Row | None] = []
        self.cache = self.mask = self.pending = None

    def size(self) -> int:
        return len(self.rows)

    def alive(self) -> int:
        return sum(r is not None for r in self.rows)

    def free(self, slots: int) -> int:
        return slots - self.alive()

    def insert(self, cache, mask: torch.Tensor, pending: torch.Tensor, rows: list[_Row], idx: list[int]) -> int:
        """Add rows `idx` of a freshly prefilled batch. A row goes into a free slot in place when it fits in the
        current width (only its own columns are written; the rest of the slot is masked); the others, if any, make
        one rebuild of the whole batch. Returns how many went in place."""
        width = self.mask.shape[1] if self.alive() else 0
        free = [b for b, r in enumerate(self.rows) if r is None] if width else []
        lengths = mask.sum(-1).tolist()
        left = []
        for row, j in zip(rows, idx, strict=True):
            n = lengths[j]
            if not free or n > width:
                left.append((row, j))
                continue
            b = free.pop()
            for layer, new in zip(self.cache.layers, cache.layers, strict=True):
                layer.keys[b, :, width - n:] = new.keys[j, :, -n:]
                layer.values[b, :, width - n:] = new.values[j, :, -n:]
            self.mask[b] = False
            self.mask[b, width - n:] = True
            self.pending[b] = pending[j]
            self.rows[b] = row
        if left:
            self._rebuild(cache, mask, pending, [row for row, _ in left], [j for _, j in left])
        return len(rows) - len(left)

    def compact(self) -> None:
        if self.alive():
            self._rebuild(None, None, None, [], [])
        else:
            self.__init__()

    def _rebuild(self, cache, mask, pending, rows: list[_Row], idx: list[int]) -> None:
        """One copy: the running rows (free slots dropped) and rows `idx` of another batch, in new buffers just
        wide enough for the longest row, with spare columns for the next decode steps."""
        old = [b for b, r in enumerate(self.rows) if r is not None] if self.rows else []
        parts = []  # (cache, mask, pending, batch indices)
        if old:
            parts.append((self.cache, self.mask, self.pending, old))
        if idx:
            parts.append((cache, mask, pending, idx))
        lengths = [m[i].sum(-1) for _, m, _, i in parts]
        need = [int(n.max()) for n in lengths]
        width, total = max(need), sum(len(i) for *_, i in parts)
        ref = parts[0][0].layers
        new_mask = parts[0][1].new_zeros(total, width)
        bufs = []
        for li in range(len(ref)):
            k0 = ref[li].keys
            shape = (total, k0.shape[1], width + _GrowingLayer.spare, k0.shape[3])
            bk, bv = k0.new_empty(shape), ref[li].values.new_empty(shape)
            start = 0
            for (c, _, _, i), w in zip(parts, need, strict=True):
                sel = torch.tensor(i, device=k0.device)
                layer = c.layers[li]
                bk[start:start + len(i), :, :width - w] = 0  # masked columns must hold finite values
                bv[start:start + len(i), :, :width - w] = 0
                bk[start:start + len(i), :, width - w:width] = layer.keys[sel, :, -w:]
                bv[start:start + len(i), :, width - w:width] = layer.values[sel, :, -w:]
                start += len(i)
            bufs.append((bk, bv))
        start = 0
        for (_, m, _, i), w in zip(parts, need, strict=True):
            sel = torch.tensor(i, device=m.device)
            new_mask[start:start + len(i), width - w:] = m[sel, -w:]
            start += len(i)
        self.pending = torch.cat([p[torch.tensor(i, device=p.device)] for _, _, p, i in parts])
        self.rows = [self.rows[b] for b in old] + rows
        self.cache = self.cache if self.cache is not None else cache
        for layer, (bk, bv) in zip(self.cache.layers, bufs, strict=True):
            layer.keys, layer.values, layer._buf = bk[:, :, :width], bv[:, :, :width], (bk, bv)
        self.mask = new_mask

