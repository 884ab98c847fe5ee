"""Slot decoding: our own decode loop over a fixed number of rows, refilled as rows finish, with KV caches kept
across calls.

`model.generate` on a static batch runs until its longest row is done, and each call prefills every prompt from
scratch. Here a batch holds at most `slots` rows; when a row ends (a stop string, EOS or `max_new_tokens`) it
leaves the batch and the next waiting prompt is prefilled and joins it. Each finished row's keys and values
(prompt + generated tokens) go to a `KVStore` under their token ids, so when the runtime sends the same
conversation back one turn later, only the new tokens (the turn's closing tag, the expert's reply, the next
generation prompt) are prefilled. The store also holds the common prefix of a call's prompts (the system
prompt), computed once. Reuse is decided on token ids alone: the re-rendered prompt is tokenized afresh and only
the longest run of ids that matches an entry exactly is taken from it.

Layout. The batch cache is `[rows, heads, columns, head_dim]`; every row's tokens end at the last column, and
columns a row does not use are masked (left padding, plus the gap between a reused prefix and the newly
prefilled tokens of a row that joined with a shorter suffix than its neighbours). Position ids are counted per
row over its unmasked columns, so each row sees exactly the positions and keys it would see alone. Columns that
no row uses any more are dropped from the left.

Sampling applies temperature, then the model's `top_k` if its generation config sets one, then `top_p`, as
`generate` does; other generation-config processors (repetition penalty and the like) are not applied.
"""

import time
from collections import deque
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from seekhelp.backends.base import Completion, GenParams, truncate_at_stop
from seekhelp.backends.kvstore import KV, Entry, KVStore


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
                  "decode_steps"):
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
        rows: list[_Row] = []
        cache = mask = pending = None
        while waiting or rows:
            while waiting and len(rows) < self.slots:  # fill every free slot, in one prompt pass
                new = [_Row(i, prompts[i]) for i in self._take(waiting, self.slots - len(rows))]
                if rows:
                    self.stats["refills"] += len(new)
                n_cache, n_mask, logits = self._prefill(new)
                n_pending = self._pick(logits)
                keep = self._advance(new, n_pending, n_cache, n_mask, out)
                if keep:
                    n_cache, n_mask, n_pending = _select(n_cache, n_mask, n_pending, keep)
                    new = [new[b] for b in keep]
                    if rows:
                        cache, mask = _merge(cache, mask, n_cache, n_mask)
                        pending = torch.cat([pending, n_pending])
                    else:
                        cache, mask, pending = n_cache, n_mask, n_pending
                    rows += new
            if not rows:
                break
            pos = mask.sum(-1, keepdim=True)  # the pending token's position: the row's unmasked columns so far
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            logits = self._forward(pending[:, None], mask, pos, cache)
            self.stats["decode_steps"] += 1
            pending = self._pick(logits)
            keep = self._advance(rows, pending, cache, mask, out)
            if len(keep) < len(rows):
                rows = [rows[b] for b in keep]
                if rows:
                    cache, mask, pending = _select(cache, mask, pending, keep)
        self.stats["generated_tokens"] += sum(c.extra.pop("generated") for c in out)
        self.stats["calls"] += len(prompts)
        return out  # type: ignore[return-value]

    @staticmethod
    def _take(waiting: deque, n: int) -> list[int]:
        return [waiting.popleft() for _ in range(min(n, len(waiting)))]

    def _advance(self, rows: list[_Row], tokens: torch.Tensor, cache, mask, out: list) -> list[int]:
        """Append each row's new token; finish the rows that are done. Returns the batch indices still running."""
        p, tok, keep = self._params, self.tok, []
        for b, (row, t) in enumerate(zip(rows, tokens.tolist(), strict=True)):
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
        kv = [(layer.keys[b:b + 1, :, -n:].clone(), layer.values[b:b + 1, :, -n:].clone()) for layer in cache.layers]
        ids = (row.prompt + row.gen)[:n]  # the last sampled token was never fed
        self.store.put(ids, kv, kind="turn", replaces=row.base)

    # ---- prompt pass ------------------------------------------------------------------------------------------

    def _shared_prefix(self, prompts: list[list[int]]) -> None:
        """Put the common prefix of this call's prompts into the store once (unless stored already)."""
        if not self.prefix_cache or len(prompts) < 2:
            return
        n = min(_common_prefix_len(prompts), min(len(p) for p in prompts) - 1)
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
        if cached:  # zeros (masked) where a row reuses fewer columns than the widest
            ref = next(e.kv for (e, _), m in zip(found, reuse, strict=True) if m)
            kv = [(k.new_zeros(len(rows), k.shape[1], cached, k.shape[3]),
                   v.new_zeros(len(rows), v.shape[1], cached, v.shape[3])) for k, v in ref]
        for b, (row, (entry, _), m) in enumerate(zip(rows, found, reuse, strict=True)):
            suffix = row.prompt[m:]
            mask[b, cached + width - len(row.prompt):] = True  # contiguous: m reused columns, then the suffix
            ids[b, width - len(suffix):] = torch.tensor(suffix)
            if m:
                for (k, v), (ek, ev) in zip(kv, entry.kv, strict=True):
                    k[b, :, cached - m:] = ek[0, :, :m]
                    v[b, :, cached - m:] = ev[0, :, :m]
                if entry.kind == "turn":
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


def _select(cache, mask: torch.Tensor, pending: torch.Tensor, keep: list[int]):
    """Keep only the rows `keep` (batch indices), then drop the columns no remaining row uses."""
    if len(keep) < mask.shape[0]:
        idx = torch.tensor(keep, device=mask.device)
        mask, pending = mask[idx], pending[idx]
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[idx], layer.values[idx]
    return cache, _trim(cache, mask), pending


def _merge(cache, mask: torch.Tensor, other, other_mask: torch.Tensor):
    """Stack two batches; the narrower is padded (masked) on the left so that every row ends at the last column."""
    width = max(mask.shape[1], other_mask.shape[1])

    def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
        missing = width - t.shape[dim]
        if missing == 0:
            return t
        shape = list(t.shape)
        shape[dim] = missing
        return torch.cat([t.new_zeros(shape), t], dim=dim)

    for layer, new in zip(cache.layers, other.layers, strict=True):
        layer.keys = torch.cat([pad(layer.keys, 2), pad(new.keys, 2)])
        layer.values = torch.cat([pad(layer.values, 2), pad(new.values, 2)])
    return cache, torch.cat([pad(mask, 1), pad(other_mask, 1)])


def _trim(cache, mask: torch.Tensor):
    first = int(mask.any(0).int().argmax())
    if first > 0:
        mask = mask[:, first:]
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
    return mask


def _common_prefix_len(rows: list[list[int]]) -> int:
    first, n = rows[0], min(len(r) for r in rows)
    for r in rows[1:]:
        i = 0
        while i < n and r[i] == first[i]:
            i += 1
        n = i
    return n
