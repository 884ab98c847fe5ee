"""Local transformers backend: many conversations in one batched `generate` call, the model loaded once.

Prompts are left-padded and sorted by length into micro-batches; each sequence stops at the first of
`params.stop` (e.g. the closing tag of the SLM's action) or at EOS, and is cut right after the stop string.
Generation runs in a worker thread so HTTP calls of other episodes progress meanwhile.
"""

import asyncio
import threading
import time

import torch

from seekhelp.backends.base import Completion, GenParams, Message, truncate_at_stop


class TransformersBackend:
    """ChatBackend over a local causal LM (CPU or GPU)."""

    def __init__(self, model_name: str = "smollm2-135m", model=None, tokenizer=None, max_batch_size: int = 32,
                 device: str | None = None, chat_template: str | None = None, name: str | None = None):
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
        self.stats = {"calls": 0, "batches": 0, "generated_tokens": 0}

    def swap_model(self, model) -> None:
        """Use new weights (e.g. after a training round) without reloading the tokenizer."""
        with self._lock:
            self.model = model.eval()

    async def generate(self, conversations: list[list[Message]], params: GenParams) -> list[Completion]:
        if not conversations:
            return []
        return await asyncio.to_thread(self.generate_blocking, conversations, params)

    def render_prompts(self, conversations: list[list[Message]]) -> list[str]:
        return [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                for c in conversations]

    def generate_blocking(self, conversations: list[list[Message]], params: GenParams) -> list[Completion]:
        prompts = self.render_prompts(conversations)
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
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        gen_kwargs = dict(max_new_tokens=params.max_new_tokens, pad_token_id=tok.pad_token_id)
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
