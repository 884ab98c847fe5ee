"""The GPU recipes as written match the README's one-node placement (GPU placement): the LLM on GPUs 0-3 at port
8000, the teacher at 8001 during data, the unseen LLM at 8002 during eval, and SFT / RL on GPUs 4-7 (4 processes,
64 dialogues per optimizer step in both)."""

from urllib.parse import urlparse

import yaml

from seekhelp.config import load_recipe

STAGE_GPUS = 4  # GPUs 4-7 of the node


def _port(url: str) -> int:
    return urlparse(url).port


def test_rl_policy_and_retrain_fit_the_stage_gpus_at_the_sft_batch():
    from rl.loop import RLRecipe
    from rl.policy import _flag

    rl = load_recipe(RLRecipe, "rl/recipes/qwen3-4b/gpu.yaml")
    dp = int(_flag(rl.policy.extra_args, "data-parallel-size") or 1)
    tp = int(_flag(rl.policy.extra_args, "tensor-parallel-size") or 1)
    assert dp * tp == STAGE_GPUS and rl.retrain.num_processes == STAGE_GPUS
    sft = yaml.safe_load(open(rl.sft_recipe))
    assert rl.retrain.sft_processes == STAGE_GPUS  # SFT ran on the same 4 GPUs
    assert sft["per_device_train_batch_size"] * sft["gradient_accumulation_steps"] * STAGE_GPUS == 64
    assert _flag(rl.policy.extra_args, "max-model-len") == "8192" and rl.policy.gpu_free_mib
    assert _port(rl.llm.base_url) == 8000


def test_each_server_keeps_its_port_across_stages():
    from pipelines.generate import DataRecipe
    from seekhelp.evaluation import recipe as evals

    data = load_recipe(DataRecipe, "pipelines/recipes/hotpotqa-nq-vllm.yaml")
    ev = {e.name: e for e in evals.load("evals/gpu.yaml").endpoints}
    llm = {e.model: _port(e.base_url) for e in (data.endpoint, data.teacher.llm, ev["main"])}
    assert set(llm.values()) == {8000} and len(llm) == 1  # one LLM, one port, in every stage
    assert _port(data.teacher.slm.base_url) == 8001 and _port(ev["unseen"].base_url) == 8002


def test_the_readme_shows_the_same_placement():
    text = open("README.md").read()
    section = text[text.index("### GPU placement"):]
    for needle in ("--tensor-parallel-size 4", "--port 8000", "--port 8001", "--port 8002",
                   "CUDA_VISIBLE_DEVICES=4,5,6,7 make sft NUM_GPUS=4 ACCELERATE_CONFIG=zero3",
                   "CUDA_VISIBLE_DEVICES=4,5,6,7 make rl", "--served-model-name Qwen/Qwen3-235B-A22B-Instruct-2507"):
        assert needle in section, needle
