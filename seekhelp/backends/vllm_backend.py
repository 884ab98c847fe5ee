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

        sp = SamplingParams(max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                            stop=params.stop, include_stop_str_in_output=True, seed=params.seed)
        t0 = time.perf_counter()
        outs = self.llm.chat(conversations, sp, use_tqdm=False)
        dt = time.perf_counter() - t0
        return [Completion(text=o.outputs[0].text, prompt_tokens=len(o.prompt_token_ids or []),
                           completion_tokens=len(o.outputs[0].token_ids), latency_s=dt) for o in outs]
