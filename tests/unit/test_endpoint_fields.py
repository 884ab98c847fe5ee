"""What the GPU recipes mean reaches the servers: extra request fields (vLLM sampling, Qwen3's thinking switch),
concurrency, the vLLM binary of its own environment, and the wait for GPU memory before a retrain."""

import asyncio
import json
import os
import stat

import pytest
import yaml

from seekhelp.backends.base import GenParams
from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
from seekhelp.backends.scripted_server import ScriptedServer
from seekhelp.records import Question

pytestmark = pytest.mark.openai_client
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}, "top_k": -1}


def test_extra_body_goes_with_every_call_and_with_the_preflight():
    with ScriptedServer() as srv:
        b = OpenAIBackend(EndpointConfig(base_url=srv.base_url, model="scripted", extra_body=NO_THINKING))
        b.check()
        asyncio.run(b.generate([[{"role": "user", "content": "q"}]], GenParams(temperature=1.0)))
    (ping,), (call,) = srv.pings, srv.requests
    for body in (ping, call):
        assert body["chat_template_kwargs"] == {"enable_thinking": False} and body["top_k"] == -1
    assert call["temperature"] == 1.0 and call["top_p"] == 1.0


def test_the_teacher_runtime_sends_each_role_its_own_fields_and_token_caps():
    from pipelines.steps import teacher_runtime_trajectories
    from seekhelp import protocol

    def reply(messages):
        if "<agent-reply>" in str(messages[-1]["content"]):
            return protocol.render_slm_turn("Known now.", protocol.ANSWER, "Lima")
        if messages[0]["role"] == "system" and "<message>" in messages[0]["content"]:
            return protocol.render_slm_turn("Ask.", protocol.MESSAGE, "What is the capital of Peru?")
        return "Noted.\n<information>Lima is the capital of Peru.</information>"

    with ScriptedServer(reply) as slm, ScriptedServer(reply) as llm:
        cfg = {"slm_endpoint": {"base_url": slm.base_url, "model": "qwen3-8b", "extra_body": NO_THINKING},
               "llm_endpoint": {"base_url": llm.base_url, "model": "big", "max_concurrency": 4},
               "slm_max_new_tokens": 321, "llm_max_new_tokens": 123, "n_max": 2, "samples": 1}
        teacher_runtime_trajectories([Question("My aunt lives in Peru. Its capital?", ["Lima"])], cfg)
    assert slm.requests and all(b["chat_template_kwargs"] == {"enable_thinking": False} for b in slm.requests)
    assert all(b["max_tokens"] == 321 for b in slm.requests)
    assert llm.requests and all("chat_template_kwargs" not in b and b["max_tokens"] == 123 for b in llm.requests)


def test_the_gpu_recipes_say_what_they_mean():
    data = yaml.safe_load(open("pipelines/recipes/hotpotqa-nq-vllm.yaml"))
    assert data["teacher"]["slm"]["model"] == "Qwen/Qwen3-8B"
    assert data["teacher"]["slm"]["extra_body"]["chat_template_kwargs"] == {"enable_thinking": False}
    assert data["teacher"]["slm_max_new_tokens"] >= 512
    rl = yaml.safe_load(open("rl/recipes/qwen3-4b/gpu.yaml"))
    assert rl["policy"]["extra_body"]["top_k"] == -1 and rl["llm"]["max_concurrency"] >= 128
    from rl.loop import RLRecipe
    from seekhelp.config import load_recipe

    r = load_recipe(RLRecipe, "rl/recipes/qwen3-4b/gpu.yaml")
    assert r.policy.extra_body == {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}
    assert r.policy.gpu_free_mib == 2048 and r.llm.extra_body == {"top_k": -1, "min_p": 0.0}
    from seekhelp.evaluation.recipe import load as load_eval

    ev = load_eval("evals/gpu.yaml")  # its served SLMs include Qwen3-8B, which thinks unless told not to
    assert "qwen3-8b" in {run.slm for run in ev.runs}
    assert ev.slm_serving.extra_body["chat_template_kwargs"] == {"enable_thinking": False}


def test_vllm_runs_from_its_own_environment_when_vllm_bin_says_so(monkeypatch):
    from seekhelp.backends.server import vllm_serve_command

    monkeypatch.setenv("VLLM_BIN", "/opt/vllm-env/bin/vllm")
    cmd = vllm_serve_command("data/models/rl/x/round-1", 8100, "127.0.0.1")
    assert cmd[:3] == ["/opt/vllm-env/bin/vllm", "serve", "data/models/rl/x/round-1"]
    assert cmd[cmd.index("--served-model-name") + 1] == "data/models/rl/x/round-1"
    monkeypatch.delenv("VLLM_BIN")
    assert vllm_serve_command("m", 1, "h")[0].endswith("vllm")


def _fake_nvidia_smi(tmp_path, readings: list[list[int]]):
    """An nvidia-smi on PATH that prints the next reading (MiB per GPU) at each call, then the last one."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    state = tmp_path / "readings.json"
    state.write_text(json.dumps(readings))
    exe = tmp_path / "bin" / "nvidia-smi"
    exe.parent.mkdir(exist_ok=True)
    exe.write_text(f"""#!/usr/bin/env python3
import json, sys
open({str(tmp_path / "argv.log")!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")
r = json.load(open({str(state)!r}))
print("\\n".join(str(x) for x in r[0]))
json.dump(r[1:] or r, open({str(state)!r}, "w"))
""")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe.parent)


def test_the_retrain_waits_for_gpu_memory_not_for_the_server_pid(tmp_path, monkeypatch):
    from seekhelp.backends.sampler import GPUBusyError, gpu_memory_used_mib, wait_gpu_memory

    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path, [[70000, 512], [30000, 512], [900, 512]])
                       + os.pathsep + os.environ["PATH"])
    wait_gpu_memory(2048, timeout_s=10, poll_s=0.01)
    assert json.loads((tmp_path / "readings.json").read_text()) == [[900, 512]]  # it polled until all were free
    assert gpu_memory_used_mib() == [900, 512]
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path / "held", [[70000]]) + os.pathsep + os.environ["PATH"])
    with pytest.raises(GPUBusyError, match=r"GPUs still use \[70000\] MiB"):
        wait_gpu_memory(2048, timeout_s=0.05, poll_s=0.01)


def test_only_the_visible_gpus_are_asked_about(tmp_path, monkeypatch):
    """nvidia-smi ignores CUDA_VISIBLE_DEVICES: the LLM server's GPUs 0-3 must not hold up a retrain on 4-7."""
    from seekhelp.backends.sampler import gpu_memory_used_mib

    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path, [[100] * 4]) + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert gpu_memory_used_mib() == [100] * 4
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    gpu_memory_used_mib()
    calls = (tmp_path / "argv.log").read_text().splitlines()
    assert calls[0].startswith("--id=4,5,6,7 --query-gpu=memory.used") and calls[1].startswith("--query-gpu")
