"""The in-process vLLM policy backend, against a stand-in `vllm` module (CPU; the real one where installed)."""

import asyncio
import sys
import types

import pytest

from seekhelp.backends.base import GenParams


class _Out:
    def __init__(self, text: str) -> None:
        self.outputs = [types.SimpleNamespace(text=text, token_ids=[1, 2, 3])]
        self.prompt_token_ids = [7] * 11


@pytest.fixture
def fake_vllm(monkeypatch):
    calls = {"llm": [], "chat": [], "shutdown": 0}

    class SamplingParams:
        def __init__(self, **kw) -> None:
            self.kw = kw

    class EngineCore:
        def shutdown(self) -> None:
            calls["shutdown"] += 1

    class LLM:
        def __init__(self, **kw) -> None:
            calls["llm"].append(kw)
            self.llm_engine = types.SimpleNamespace(engine_core=EngineCore())

        def chat(self, conversations, sp, use_tqdm=False):
            calls["chat"].append((conversations, sp.kw))
            return [_Out(f"<answer>{i}</answer>") for i, _ in enumerate(conversations)]

    mod = types.ModuleType("vllm")
    mod.LLM, mod.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", mod)
    return calls


def test_the_sampler_sizes_the_engine_sends_every_sampling_field_and_frees_it(fake_vllm):
    from rl.policy import PolicyConfig, PolicySampler

    sampler = PolicySampler(PolicyConfig(kind="vllm", max_model_len=4096, gpu_memory_utilization=0.35), 64)
    backend = sampler.open("ckpt/round-1", "demo/round-1")
    assert fake_vllm["llm"] == [{"model": "ckpt/round-1", "gpu_memory_utilization": 0.35, "max_model_len": 4096}]
    conv = [[{"role": "user", "content": "q"}]] * 2
    outs = asyncio.run(backend.generate(conv, GenParams(max_new_tokens=32, temperature=1.0, stop=["</message>"],
                                                        seed=3)))
    assert [o.text for o in outs] == ["<answer>0</answer>", "<answer>1</answer>"]
    assert outs[0].prompt_tokens == 11 and outs[0].completion_tokens == 3 and backend.name == "demo/round-1"
    (_, sp), = fake_vllm["chat"]
    assert sp == {"max_tokens": 32, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "min_p": 0.0,
                  "stop": ["</message>"], "include_stop_str_in_output": True, "seed": 3}
    sampler.close()  # before the retrain: the engine is shut down, not only dropped
    assert fake_vllm["shutdown"] == 1 and backend.llm is None
    sampler.close()
    assert fake_vllm["shutdown"] == 1


def test_without_max_model_len_the_engine_gets_no_such_argument(fake_vllm):
    from rl.policy import PolicyConfig, PolicySampler

    PolicySampler(PolicyConfig(kind="vllm"), 8).open("m", "m")
    assert "max_model_len" not in fake_vllm["llm"][0]


def test_sampling_fields_exist_in_the_real_vllm():
    vllm = pytest.importorskip("vllm", reason="vLLM is not installed here (GPU machines: make vllm-env)")
    sp = vllm.SamplingParams(max_tokens=8, temperature=1.0, top_p=1.0, top_k=-1, min_p=0.0, stop=["x"],
                             include_stop_str_in_output=True, seed=1)
    assert sp.top_k in (-1, 0) and sp.min_p == 0.0
