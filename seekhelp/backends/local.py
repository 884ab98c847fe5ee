"""Local transformers backend: many conversations per call, the model loaded once, two decoding engines.

`engine="slots"` (the default on CPU; `seekhelp/backends/decode.py`): our own decode
loop over at most `max_batch_size` rows. Prompts wait in order of length; when a row ends (the first of
`params.stop`, e.g. the closing tag of the SLM's action, EOS or `max_new_tokens`) its slot goes to the next waiting
prompt, so a batch never waits for its longest row. Every finished row's keys/values (prompt + generated tokens) are
kept in an LRU store (a cap in tokens, `kv_cache_tokens`; emptied by `swap_model`) under their token ids, and the
common prefix of a call's prompts (the system prompt) is stored once; a later prompt is prefilled only past the
longest stored run of identical token ids, so the runtime's next turn of an episode runs just the new tokens. Greedy
output is the same as `model.generate` on each prompt alone (tests/unit/test_local_backend_engine.py). Models with
sliding-window or linear-attention layers fall back to the static engine.

`engine="static"` (the default on a GPU): left-padded micro-batches of `max_batch_size` prompts sorted by length, one
`model.generate` each. The key/value cache of the micro-batch's longest common token prefix is computed once (kept
while the model and the prefix stay the same) and repeated over the batch; rows are laid out as
[prefix][padding][own tokens] with the padding masked, so positions stay exact.

`engine=` or env `SEEKHELP_ENGINE=slots|static` picks one; otherwise slots on CPU, static on a GPU. Measured on CPU:
the demo eval's trained-SLM runs (64 test questions, batch 64, 2 cores) took 222 s with slots against 303 s static
(1.37x) and wrote the same 320 trajectories turn for turn; benchmarks/rollout_engine.py measured 1.4-1.5x at 32
episodes but 0.7x at 128 rows, so the recipes that run on CPU keep their SLM batches at 64 or below. On GPUs nothing
is measured yet (the GPU recipes sample with vLLM), so static stays there.

Both cut each text right after its earliest stop string. Generation runs in a worker thread so HTTP calls of other
episodes progress meanwhile.
"""

import asyncio
import copy
import logging
import os
import threading
import time

import torch

from seekhelp.backends.base import Completion, GenParams, Message, truncate_at_stop
from seekhelp.backends.kvstore import common_prefix_len

log = logging.getLogger(__name__)


def default_engine(model) -> str:
    """slots on CPU (measured faster at the batch sizes the CPU recipes use), static on a GPU (not measured there)."""
    return "static" if model.device.type != "cpu" else "slots"


class TransformersBackend:
    """ChatBackend over a local causal LM (CPU or GPU)."""

    def __init__(self, model_name: str = "smollm2-135m", model=None, tokenizer=None, max_batch_size: int = 32,
                 device: str | None = None, chat_template: str | None = None, name: str | None = None,
                 prefix_cache: bool = True, min_prefix_tokens: int = 32, engine: str | None = None,
                 kv_cache_tokens: int = 32768, turn_cache: bool = True):
        if model is None or tokenizer is None:
            from seekhelp import models

            model, tokenizer = models.load(model_name, device=device)
        self.model, self.tokenizer = model, tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if chat_template:
            self.tokenizer.chat_template = chat_template
        self.name = name or model_name
        self.max_batch_size = max_batch_size
        self._lock = threading.Lock()
        self.prefix_cache, self.min_prefix_tokens = prefix_cache, min_prefix_tokens
        self._prefix: tuple | None = None  # ((model id, prefix ids), cache of batch 1)
        self.stats = {"calls": 0, "batches": 0, "generated_tokens": 0, "prefix_tokens_reused": 0}
        engine = engine or os.environ.get("SEEKHELP_ENGINE") or default_engine(self.model)
        if engine not in ("slots", "static"):
            raise ValueError(f"engine must be 'slots' or 'static', not {engine!r}")
        from seekhelp.backends import decode
        from seekhelp.backends.kvstore import KVStore

        if engine == "slots" and not decode.supports(self.model):
            log.warning("%s: sliding-window or linear-attention layers; using the static engine", self.name)
            engine = "static"
        self.engine = engine
        self.kv_store = KVStore(max_tokens=kv_cache_tokens)
        self._slots = decode.SlotEngine(self.model, self.tokenizer, self.kv_store, self.stats, slots=max_batch_size,
                                        prefix_cache=prefix_cache, min_prefix_tokens=min_prefix_tokens,
                                        keep_turns=turn_cache)

    def swap_model(self, model) -> None:
        """Use new weights (e.g. after a training round) without reloading the tokenizer."""
        with self._lock:
            self.model = self._slots.model = model.eval()
            self._prefix = None
            self.kv_store.clear()  # keys and values of the old weights

    async def generate(self, conversations: list[list[Message]], params: GenParams) -> list[Completion]:
        if not conversations:
            return []
        return await asyncio.to_thread(self.generate_blocking, conversations, params)

    def render_prompts(self, conversations: list[list[Message]]) -> list[str]:
        return [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                for c in conversations]

    def generate_blocking(self, conversations: list[list[Message]], params: GenParams) -> list[Completion]:
        prompts = self.render_prompts(conversations)
        if self.engine == "slots":
            ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
            with self._lock:
                return self._slots.run(ids, params)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Completion | None] = [None] * len(prompts)
        with self._lock:
            for start in range(0, len(order), self.max_batch_size):
                idx = order[start:start + self.max_batch_size]
                for i, c in zip(idx, self._batch([prompts[i] for i in idx], params), strict=True):
                    out[i] = c
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def _batch(self, prompts: list[str], params: GenParams) -> list[Completion]:
        t0 = time.perf_counter()
        tok = self.tokenizer
        enc, cache = self._encode(prompts)
        gen_kwargs = dict(max_new_tokens=params.max_new_tokens, pad_token_id=tok.pad_token_id)
        if cache is not None:
            gen_kwargs["cache"] = cache  # transformers 5.24+ name (past_key_values is deprecated)
        if params.temperature and params.temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            gen_kwargs.update(stop_strings=params.stop, tokenizer=tok)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        seqs = self.model.generate(**enc, **gen_kwargs)
        new = seqs[:, enc["input_ids"].shape[1]:]
        elapsed = time.perf_counter() - t0
        results = []
        special = {tok.pad_token_id, tok.eos_token_id}
        for row, mask in zip(new.tolist(), enc["attention_mask"], strict=True):
            ids = []
            for t in row:
                if t in special:
                    break
                ids.append(t)
            text = truncate_at_stop(tok.decode(ids, skip_special_tokens=True), params.stop)
            n_completion = len(tok(text, add_special_tokens=False)["input_ids"]) if params.stop else len(ids)
            results.append(Completion(text=text, prompt_tokens=int(mask.sum()), completion_tokens=n_completion,
                                      latency_s=elapsed))
            self.stats["generated_tokens"] += len(ids)
        self.stats["calls"] += len(prompts)
        self.stats["batches"] += 1
        return results

    def _encode(self, prompts: list[str]):
        """(input_ids + attention_mask, shared-prefix cache or None) for one micro-batch."""
        tok, device = self.tokenizer, self.model.device
        rows = tok(prompts, add_special_tokens=False)["input_ids"]
        n = common_prefix_len(rows) if self.prefix_cache and len(rows) > 0 else 0
        n = min(n, min(len(r) for r in rows) - 1)  # every row keeps at least one token of its own
        if n < self.min_prefix_tokens:
            n = 0  # plain left padding
        prefix, width = rows[0][:n], max(len(r) for r in rows) - n
        pad = tok.pad_token_id
        ids = [prefix + [pad] * (width - len(r) + n) + r[n:] for r in rows]
        mask = [[1] * n + [0] * (width - len(r) + n) + [1] * (len(r) - n) for r in rows]
        enc = {"input_ids": torch.tensor(ids, device=device), "attention_mask": torch.tensor(mask, device=device)}
        if n == 0:
            return enc, None
        key = (id(self.model), tuple(prefix))
        if self._prefix is None or self._prefix[0] != key:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.model.config)
            self.model(input_ids=torch.tensor([prefix], device=device), cache=cache, use_cache=True)
            self._prefix = (key, cache)
        cache = copy.deepcopy(self._prefix[1])
        cache.batch_repeat_interleave(len(rows))
        self.stats["prefix_tokens_reused"] += n * len(rows)
        return enc, cache

