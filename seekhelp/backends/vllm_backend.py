"""Optional in-process vLLM backend for GPU machines (import-guarded: vLLM is not a default dependency).

For serving a policy to many workers prefer `vllm serve` + OpenAIBackend; this class is for sampling rollouts
inside one training process.
"""

import asyncio
import time

from seekhelp.backends.base import Completion, GenParams, Message


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


class VLLMBackend:
    def __init__(self, model: str, name: str | None = None, gpu_memory_utilization: float = 0.5, **engine_kwargs):
        try:
            from vllm import LLM
        except ImportError as e:
            raise RuntimeError("the vllm backend needs `pip install seekhelp[vllm]` on a CUDA machine") from e
        self.llm = LLM(model=model, gpu_memory_utilization=gpu_memory_utilization, **engine_kwargs)
        self.name = name or model

    async def generate(self, conversations: list[list[Message]], params: GenParams) -> list[Completion]:
        return await asyncio.to_thread(self._generate, conversations, params)

    def _generate(self, conversations: list[list[Message]], params: GenParams) -> list[Completion]:
        from vllm import SamplingParams

        # every sampling field set here: what vLLM would otherwise take from the checkpoint's generation config (top_k
        # 20 for Qwen3) silently narrows exploration at temperature 1.0
        sp = SamplingParams(max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                            top_k=-1, min_p=0.0, stop=params.stop, include_stop_str_in_output=True, seed=params.seed)
        t0 = time.perf_counter()
        outs = self.llm.chat(conversations, sp, use_tqdm=False)
        dt = time.perf_counter() - t0
        return [Completion(text=o.outputs[0].text, prompt_tokens=len(o.prompt_token_ids or []),
                           completion_tokens=len(o.outputs[0].token_ids), latency_s=dt) for o in outs]

    def close(self) -> None:
        """Shut the engine down and give its GPU memory back before the retrain starts (deleting the object is not
        enough: the engine core keeps its workers and KV cache until it is shut down)."""
        import contextlib
        import gc

        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        for target in (getattr(engine, "engine_core", None), engine):
            if target is not None and hasattr(target, "shutdown"):
                with contextlib.suppress(Exception):
                    target.shutdown()
                break
        del llm
        gc.collect()
        with contextlib.suppress(ImportError):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
