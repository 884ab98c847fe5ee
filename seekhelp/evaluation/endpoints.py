"""What an eval talks to: the SLMs (each loaded once) and the LLM endpoints (each started once, shared by runs).

An endpoint is the embedded `transformers serve`, an external OpenAI-compatible URL, the LLM role generated
in-process and batched (`kind: local`), or the kb-retriever (a real local HTTP server whose replies are
knowledge-base retrieval, asking back with <need> when a request names no place it can ground on).
"""

import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seekhelp.backends.base import Completion
from seekhelp.evaluation.recipe import EndpointSpec, EvalRecipe, RunSpec

log = logging.getLogger("seekhelp.eval")
_ROUND_RE = re.compile(r"round-(\d+)$")


class NoLLM:
    """Stands in for the LLM in runs that never call it (slm_cot): starts nothing, records llm = "none"."""

    name = "none"

    async def generate(self, conversations, params) -> list[Completion]:
        return [Completion(text="", error="this run has no LLM") for _ in conversations]


def resolve_slm(spec: str | list[str]) -> str | None:
    """The first candidate that can be loaded: a registry name, an existing model folder, or a Hub id ("org/name").
    A folder named `final` that does not exist means the model the RL loop chose on validation (`final.json`
    beside it: the best round, the SFT start included); `latest`, or `final` without that file, means the highest
    round-N checkpoint beside it."""
    import json

    from seekhelp.models import REGISTRY

    for cand in [spec] if isinstance(spec, str) else spec:
        p = Path(cand)
        if cand in REGISTRY or (p / "config.json").exists():
            return cand
        chosen = p.parent / "final.json"
        if p.name == "final" and chosen.is_file():
            ckpt = json.loads(chosen.read_text())["checkpoint"]
            if (Path(ckpt) / "config.json").exists():
                return ckpt
        if p.name in ("latest", "final") and p.parent.is_dir():
            rounds = [(int(m.group(1)), d) for d in p.parent.iterdir()
                      if (m := _ROUND_RE.search(d.name)) and (d / "config.json").exists()]
            if rounds:
                return str(max(rounds)[1])
        if cand.count("/") == 1 and not cand.startswith((".", "/", "data/")) and not p.exists():
            return cand  # a Hub id (loads on machines that reach the Hub)
    return None


def kb_reply(kb, k: int = 3):
    """The kb-retriever's reply: the top-k knowledge-base facts for the last message, as <information>; a message
    that names no country, capital or city gets <need> saying which place is missing (it could only be guessed)."""
    from seekhelp.knowledge import need_text

    def reply(messages: list[dict]) -> str:
        query = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
        missing = kb.missing(query) if query.strip() else None
        if missing:
            return f"The request does not say which {missing} it is about.\n<need>{need_text(missing)}</need>"
        facts = [f.text for f in kb.retrieve(query, k=k)] if query.strip() else []
        if not facts:
            return "Nothing in the knowledge base matches.\n<information>No relevant facts found.</information>"
        return "Retrieved from the knowledge base.\n<information>" + " ".join(facts) + "</information>"

    return reply


@dataclass
class Endpoints:
    """Endpoints by name, each started on first use and kept for the whole eval."""

    recipe: EvalRecipe
    stack: contextlib.ExitStack
    slms: "SLMs"
    _backends: dict[str, Any] = field(default_factory=dict)
    _served: dict[str, Any] = field(default_factory=dict)  # embedded model name → RunningServer
    described: dict[str, dict] = field(default_factory=dict)
    _kb: Any = None

    def kb(self):
        if self._kb is None:
            from seekhelp.knowledge import KnowledgeBase

            self._kb = KnowledgeBase.from_geonames()
        return self._kb

    def backend(self, name: str):
        if name in self._backends:
            return self._backends[name]
        from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend

        e = self.recipe.endpoint(name)
        base_url, model, label, how = e.base_url, e.model, e.label or e.model, "external OpenAI-compatible endpoint"
        if e.kind == "local":
            from seekhelp.backends.local import TransformersBackend

            slm = self.slms.get(e.model, pin=True)
            b = TransformersBackend(model=slm.model, tokenizer=slm.tokenizer, max_batch_size=slm.max_batch_size,
                                    name=e.label or e.model)
            b._lock = slm._lock  # one model, one generate at a time
            self._backends[name] = b
            self.described[name] = {"name": name, "kind": e.kind, "base_url": "(in-process)", "label": b.name,
                                    "ground": e.ground, "how": "in-process transformers, batched (no HTTP server)"}
            return b
        if e.kind == "kb-retriever":
            from seekhelp.backends.scripted_server import ScriptedServer

            srv = self.stack.enter_context(ScriptedServer(reply=kb_reply(self.kb(), e.top_k), models=["kb-retriever"]))
            base_url, model, label = srv.base_url, "kb-retriever", e.label or "kb-retriever"
            how = f"kb-retriever: local HTTP server, replies = top-{e.top_k} geonames facts (BM25), tokens = words"
        elif not base_url:
            from seekhelp.backends.server import serve

            if e.model not in self._served:
                t0 = time.perf_counter()
                self._served[e.model] = self.stack.enter_context(serve(e.model))
                log.info("embedded transformers serve on %s up in %.0f s", e.model, time.perf_counter() - t0)
            srv = self._served[e.model]
            base_url, model, label, how = srv.base_url, srv.model, e.label or srv.label, "embedded transformers serve"
        cfg = EndpointConfig(base_url=base_url, model=model, label=label, api_key_env=e.api_key_env,
                             max_concurrency=e.max_concurrency,
                             extra_body=e.extra_body if e.kind == "openai" and e.base_url else None)
        self._backends[name] = OpenAIBackend(cfg)
        self.described[name] = {"name": name, "kind": e.kind, "how": how, "base_url": base_url, "label": label,
                                "ground": e.ground and e.kind != "kb-retriever"}
        return self._backends[name]

    async def aclose(self) -> None:
        for b in self._backends.values():
            if hasattr(b, "aclose"):
                with contextlib.suppress(Exception):
                    await b.aclose()

    def grounder(self, e: EndpointSpec):
        if not e.ground or e.kind == "kb-retriever":
            return None
        from seekhelp.knowledge import grounder

        return grounder(self.kb(), k=e.top_k)


class SLMs:
    """Each SLM loaded once and dropped after the last run that needs it. With `serving` other than local (the
    recipe's `slm_serving`, the RL rounds' sampler: `vllm serve` on GPUs), a run's SLM is served for its runs and
    stopped after the last one; the in-process LLM endpoints (pinned) stay in this process."""

    def __init__(self, plan: list[tuple[str, RunSpec, str]], batch_size: int, serving=None):
        from seekhelp.backends.sampler import PolicyConfig, PolicySampler

        self.left = {}
        for _, _, slm in plan:
            self.left[slm] = self.left.get(slm, 0) + 1
        self.batch_size, self._loaded, self._pinned = batch_size, {}, set()
        self.serving = serving or PolicyConfig()
        self._sampler = None if self.serving.kind == "local" else PolicySampler(self.serving, batch_size)
        self._served: tuple[str, object] | None = None

    def get(self, slm: str, pin: bool = False):
        if pin:
            self._pinned.add(slm)
        if slm not in self._loaded:
            from seekhelp.backends.local import TransformersBackend

            t0 = time.perf_counter()
            self._loaded[slm] = TransformersBackend(slm, max_batch_size=self.batch_size, name=slm)
            log.info("loaded SLM %s in %.1f s", slm, time.perf_counter() - t0)
        return self._loaded[slm]

    async def aget(self, slm: str):
        """A run's SLM: in-process, or served (started once for its runs; the previous one is stopped first)."""
        if self._sampler is None or slm in self._pinned:
            return self.get(slm)
        if self._served is None or self._served[0] != slm:
            import asyncio

            t0 = time.perf_counter()
            backend = await asyncio.to_thread(self._sampler.open, slm, slm)  # starts a server, checks it: blocking
            self._served = (slm, backend)
            log.info("serving SLM %s (%s %s) after %.1f s", slm, self.serving.kind, self.serving.engine,
                     time.perf_counter() - t0)
        return self._served[1]

    def done(self, slm: str) -> None:
        self.left[slm] -= 1
        if self.left[slm] == 0 and slm not in self._pinned:
            self._loaded.pop(slm, None)
            if self._served is not None and self._served[0] == slm:
                self.close()

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.close()
        self._served = None
