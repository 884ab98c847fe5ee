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
        for k in ("prefill_tokens", "cached_tokens_reused", "turn_cache_hits", "refills", "decode_steps"):
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
        cols = mask[b].nonzero().squeeze(1)
        kv = [(layer.keys[b:b + 1, :, cols], layer.values[b:b + 1, :, cols]) for layer in cache.layers]
        ids = (row.prompt + row.gen)[:cols.numel()]  # the last sampled token was never fed
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
        self.store.put(ids, [(layer.keys, layer.values) for layer in cache.layers], kind="prefix")

    def _prefill(self, rows: list[_Row]):
        """One prompt pass for rows joining the batch: each starts from its longest stored prefix.
        Returns (cache, mask, logits of each row's last prompt token)."""
        device, now = self.model.device, time.perf_counter()
        starts: list[tuple[Entry | None, int]] = []
        for row in rows:
            row.t0 = now
            entry, m = self.store.lookup(row.prompt)
            m = min(m, len(row.prompt) - 1)  # at least one token goes through the model, for its logits
            starts.append((entry, m))
            if entry is not None and entry.kind == "turn" and m > 0:
                self.stats["turn_cache_hits"] += 1
                row.base = entry
        width_c = max(m for _, m in starts)
        width_s = max(len(r.prompt) - m for r, (_, m) in zip(rows, starts, strict=True))
        mask = torch.zeros(len(rows), width_c + width_s, dtype=torch.bool)
        ids = torch.full((len(rows), width_s), self.tok.pad_token_id, dtype=torch.long)
        kv = None
        if width_c:  # zeros where a row reuses fewer columns than the widest (masked)
            ref = next(e.kv for e, m in starts if m)
            kv = [(k.new_zeros(len(rows), k.shape[1], width_c, k.shape[3]),
                   v.new_zeros(len(rows), v.shape[1], width_c, v.shape[3])) for k, v in ref]
        for b, (row, (entry, m)) in enumerate(zip(rows, starts, strict=True)):
            suffix = row.prompt[m:]
            mask[b, width_c - m:width_c] = True
            mask[b, mask.shape[1] - len(suffix):] = True
            ids[b, width_s - len(suffix):] = torch.tensor(suffix)
            if m:
                for (k, v), (ek, ev) in zip(kv, entry.kv, strict=True):
                    k[b, :, width_c - m:] = ek[0, :, :m]
                    v[b, :, width_c - m:] = ev[0, :, :m]
            self.stats["prefill_tokens"] += len(suffix)
            self.stats["cached_tokens_reused"] += m
        mask = mask.to(device)
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, width_c:]
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
    """A DynamicCache holding `kv` as is (no copy), or an empty one."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    if kv is not None:
        for layer, (k, v) in zip(cache.layers, kv, strict=True):
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
    return cache


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
