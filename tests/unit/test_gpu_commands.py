"""The GPU path's command lines and checks, on CPU: accelerate's own parser reads the retrain command, accelerate
loads every config we ship, and `seekhelp doctor` names in one line each what the GPU recipes need and this
machine lacks (and passes them where a fake nvidia-smi and a vLLM executable are present)."""

import os
import stat

import pytest

from seekhelp.backends.scripted_server import ScriptedServer
from tests.unit.test_endpoint_fields import _fake_nvidia_smi

GPU_RL = "rl/recipes/qwen3-4b/gpu.yaml"


def test_the_retrain_command_parses_with_accelerates_own_parser():
    from accelerate.commands.launch import launch_command_parser

    from rl.policy import RetrainConfig, accelerate_command

    rt = RetrainConfig(launcher="accelerate", accelerate_config="sft/accelerate/zero3.yaml", num_processes=8)
    cmd = accelerate_command(rt, ["--config", "sft/recipes/qwen3-4b/gpu.yaml", "--gradient_accumulation_steps", "2"])
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(cmd[3:])
    assert args.config_file == "sft/accelerate/zero3.yaml" and args.num_processes == 8 and args.module
    assert args.training_script == "sft.train" and args.main_process_port > 0
    assert args.training_script_args == ["--config", "sft/recipes/qwen3-4b/gpu.yaml", "--gradient_accumulation_steps",
                                         "2"]


@pytest.mark.parametrize("name", ["cpu", "ddp", "zero3"])
def test_every_accelerate_config_loads_with_accelerate(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(f"sft/accelerate/{name}.yaml")
    if name == "zero3":
        assert str(cfg.distributed_type).endswith("DEEPSPEED") and cfg.deepspeed_config["zero_stage"] == 3
        assert str(cfg.mixed_precision).endswith("bf16")


def test_the_vllm_command_parses_with_vllms_parser_where_vllm_is_installed():
    pytest.importorskip("vllm", reason="vLLM is not installed here (GPU machines: make vllm-env)")
    from vllm.entrypoints.openai.cli_args import make_arg_parser
    from vllm.utils import FlexibleArgumentParser

    from seekhelp.backends.server import vllm_serve_command

    cmd = vllm_serve_command("data/models/rl/qwen3-4b/round-1", 8100, "127.0.0.1")
    args = make_arg_parser(FlexibleArgumentParser()).parse_args([*cmd[3:], "--data-parallel-size", "8"])
    assert args.port == 8100 and args.served_model_name == ["data/models/rl/qwen3-4b/round-1"]


def _by_what(findings):
    return {f.what: f for f in findings}


def test_doctor_names_what_the_gpu_recipes_need_and_this_machine_lacks(monkeypatch, tmp_path):
    from seekhelp.preflight import doctor

    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi, no vllm
    monkeypatch.delenv("VLLM_BIN", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with ScriptedServer(models=["Qwen/Qwen3-235B-A22B-Instruct-2507"]) as llm:
        found = _by_what(doctor(rl=GPU_RL, overrides={"rl": [f"llm.base_url={llm.base_url}",
                                                             "hub_model_id=you/qwen3-4b-rl"]}))
    assert found[f"{GPU_RL}: llm"].ok  # the endpoint answers for its model id
    fails = {w: f.detail for w, f in found.items() if not f.ok}
    assert "no `vllm` executable" in fails[f"{GPU_RL}: policy: vllm serve"]
    assert "needs 4 GPU(s); no nvidia-smi" in fails[f"{GPU_RL}: policy: GPUs"]
    assert "needs 4 GPU(s)" in fails[f"{GPU_RL}: retrain: GPUs"]
    assert "HF_TOKEN is empty" in fails[f"{GPU_RL}: rl: hub_model_id"]
    if f"{GPU_RL}: retrain: DeepSpeed" in fails:
        assert "pip install -e '.[gpu]'" in fails[f"{GPU_RL}: retrain: DeepSpeed"]


def test_doctor_checks_the_eval_s_served_slms(monkeypatch, tmp_path):
    """The GPU eval serves its SLMs with `vllm serve` (slm_serving): doctor names a missing vllm before any run."""
    from seekhelp.preflight import doctor

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("VLLM_BIN", raising=False)
    with ScriptedServer(models=["m"]) as llm:
        ep = f"endpoints=[{{name: main, base_url: '{llm.base_url}', model: m}}]"
        found = _by_what(doctor(eval_="evals/gpu.yaml", overrides={"eval": [
            ep, "runs=[{name: t, strategy: slm_cot}]", "paired=[]", "transfer=[]", "judge.llm_judge=false"]}))
    assert not found["evals/gpu.yaml: slm_serving: vllm serve"].ok
    assert "no `vllm` executable" in found["evals/gpu.yaml: slm_serving: vllm serve"].detail
    plain = _by_what(doctor(eval_="evals/demo.yaml"))
    assert not any("slm_serving" in w for w in plain)  # the demo generates in-process


def test_doctor_passes_the_placement_where_the_gpus_and_vllm_are_there(monkeypatch, tmp_path):
    from seekhelp.preflight import doctor

    vllm = tmp_path / "vllm"
    vllm.write_text("#!/bin/sh\n")
    vllm.chmod(vllm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("VLLM_BIN", str(vllm))
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path / "smi", [[500] * 8]) + os.pathsep + os.environ["PATH"])
    with ScriptedServer(models=["Qwen/Qwen3-235B-A22B-Instruct-2507"]) as llm:
        found = _by_what(doctor(rl=GPU_RL, overrides={"rl": [f"llm.base_url={llm.base_url}"]}))
    assert found[f"{GPU_RL}: policy: vllm serve"].ok and found[f"{GPU_RL}: policy: GPUs"].ok
    assert "8 GPU(s) visible" in found[f"{GPU_RL}: retrain: GPUs"].detail


def test_doctor_refuses_loopback_endpoints_on_a_multi_node_ray_cluster():
    from seekhelp.preflight import Endpoint, _routable

    eps = [Endpoint("endpoint", "http://localhost:8000/v1", "m"),
           Endpoint("teacher.slm", "http://10.0.0.5:8001/v1", "m")]
    with pytest.raises(ValueError, match="endpoint.base_url http://localhost:8000/v1 is loopback"):
        _routable(eps, "10.0.0.2:6379")
    assert "one machine" in _routable(eps, "127.0.0.1:6379")
    assert "reachable by address" in _routable(eps[1:], "10.0.0.2:6379")
