"""A rehearsal of the GPU path on CPU: the GPU recipes of the repo, chained data → sft → rl (2 rounds) → eval.

What is swapped, by `--set` only (the recipes' own paths are kept, so the chain is theirs): models for a tiny random
Llama, every LLM endpoint for a scripted local OpenAI-compatible server, the 8-GPU ZeRO-3 launches for
`accelerate launch` with 2 CPU processes (gloo, sft/accelerate/cpu.yaml), and the vLLM policy server for
`transformers serve` on each round's checkpoint (rollouts are HTTP calls to it). Seeds are the offline set instead
of the Hub's (the hub layout itself is covered where seeds are). Every stage runs in a temporary folder that holds
`data/`, with the repository's recipes, queries and templates linked in, so each artifact must appear exactly where
the next recipe reads it.

    make test-rehearsal        (pytest -m rehearsal; minutes, not part of `make test`)
"""

import json
import time
from pathlib import Path

import pytest

from seekhelp.backends.scripted_server import ScriptedServer, default_reply
from tests.reliability.conftest import ROOT, child_env, run_module

pytestmark = [pytest.mark.rehearsal, pytest.mark.slow]

DATA = ROOT / "pipelines/recipes/hotpotqa-nq-vllm.yaml"
SFT = "sft/recipes/qwen3-4b/gpu.yaml"
RL = ROOT / "rl/recipes/qwen3-4b/gpu.yaml"
EVAL = ROOT / "evals/gpu.yaml"
CPU_TRAIN = ["--use_cpu", "true", "--bf16", "false", "--dtype", "float32", "--activation_checkpointing", "false",
             "--dataloader_num_workers", "0", "--dataset_num_proc", "1", "--max_length", "1024", "--max_steps", "2",
             "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"]
JUDGE = json.dumps({"reason": "The request names no private fact.", "leaked_items": [], "leak": False})


def reply(messages: list[dict]) -> str:
    if messages and "You audit what a small" in messages[0]["content"]:
        return JUDGE
    return default_reply(messages)


def sets(*pairs: str) -> list[str]:
    return [a for p in pairs for a in ("--set", p)]


def stage(name: str, module: str, args: list[str], cwd: Path, walls: dict, timeout: float = 900) -> str:
    t0 = time.perf_counter()
    res = run_module(module, *args, cwd=cwd, env=child_env(SEEKHELP_SERVE_DEVICE="cpu", OMP_NUM_THREADS="1"),
                     timeout=timeout)
    walls[name] = round(time.perf_counter() - t0, 1)
    assert res.returncode == 0, f"{name} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    return res.stderr


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A folder in which the recipes' relative paths resolve: repo code linked in, `data/` of its own."""
    for name in ("sft", "rl", "evals", "pipelines"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "queries").symlink_to(ROOT / "data" / "queries")
    return tmp_path


def test_gpu_recipes_chain_on_cpu(workdir, tiny_model_dir):
    walls: dict[str, float] = {}
    t0 = time.perf_counter()
    with ScriptedServer(reply) as llm:
        endpoint = [f"endpoint.base_url={llm.base_url}", "endpoint.model=scripted"]
        # data: the GPU data recipe (LLM judge in chunks against the local server), offline seeds, knowledge teacher
        stage("data", "pipelines.generate", ["--config", str(DATA), *sets(
            "seeds.kind=offline", "seeds.n_per_split={train: 24, validation: 6, test: 6}", "injection.kind=offline",
            "teacher.kind=knowledge", "teacher.samples=2", "judge.limit=16",
            "judge.chunk_size=8", *endpoint)], workdir, walls)
        store = workdir / "data/store.duckdb"
        assert store.exists()

        # sft: the GPU SFT recipe under accelerate launch, 2 CPU processes; it exports from the store itself
        sft_out = workdir / "data/models/sft/qwen3-4b-gpu"
        launch = ["--config_file", "sft/accelerate/cpu.yaml", "--num_processes", "2", "--main_process_port",
                  str(_port()), "-m", "sft.train"]
        stage("sft", "accelerate.commands.launch", [*launch, "--config", SFT, "--model_name_or_path", tiny_model_dir,
                                                    "--per_device_train_batch_size", "2", "--eval_holdout", "4",
                                                    "--per_device_eval_batch_size", "2", *CPU_TRAIN], workdir, walls)
        assert (sft_out / "config.json").exists() and (sft_out / "recipe.yaml").exists()

        # rl: 2 rounds; rollouts through `transformers serve` on each checkpoint, retrain via accelerate (2 procs)
        overrides = json.dumps(["--learning_rate", "1.0e-5", "--per_device_train_batch_size", "2", "--eval_strategy",
                                "no", "--eval_holdout", "0", *CPU_TRAIN])  # as the recipe's own: no eval per round
        log = stage("rl", "rl.loop", ["--config", str(RL), *sets(
            "rounds=2", "k=1", "train_questions=8", "validation_questions=4", "easy_k=1", "n_max=2",
            "slm_max_new_tokens=24", "llm_max_new_tokens=16", "batch_size=8", "min_reward=-100",
            f"llm.base_url={llm.base_url}", "llm.model=scripted", "policy.kind=server", "policy.engine=transformers",
            "policy.extra_args=[]", "policy.extra_body=null",  # vLLM sampling fields: transformers serve refuses them
            "policy.max_concurrency=8", "retrain.accelerate_config=sft/accelerate/cpu.yaml",
            "retrain.num_processes=2", "retrain.sft_processes=1", f"sft_overrides={overrides}")], workdir, walls)
        assert log.count("served at http://127.0.0.1:") >= 3, "rollouts/validation did not go through the server"
        assert log.count("accelerate.commands.launch") == 4, "the RL and control retrains did not use accelerate"
        rl_dir = workdir / "data/models/rl/qwen3-4b"
        for r in (1, 2):
            assert (rl_dir / f"round-{r}" / "config.json").exists(), f"round {r} checkpoint missing"
            assert (rl_dir / f"round-{r}-data").is_dir()

        # eval: the GPU eval recipe's trained SLMs (its own paths) against the local server
        ep = [{"name": n, "base_url": llm.base_url, "model": "scripted", "label": n, "ground": False}
              for n in ("main", "unseen")]
        elog = stage("eval", "seekhelp.eval", ["--config", str(EVAL), *sets(
            "datasets=[{name: geo-test, source: geo, split: test, limit: 4}]", f"endpoints={json.dumps(ep)}",
            "runs=[{name: sft, strategy: dynamic, slm: data/models/sft/qwen3-4b-gpu}, "
            "{name: control, strategy: dynamic, slm: data/models/rl/qwen3-4b/control/final}, "
            "{name: rl, strategy: dynamic, slm: data/models/rl/qwen3-4b/final}]",
            "transfer=[{name: transfer, strategy: dynamic, slm: [data/models/rl/qwen3-4b/final], llm: unseen}]",
            "paired=[{a: rl, b: control}]",
            # the SLMs through `transformers serve`, as the recipe's `vllm serve` (its flags are vLLM's)
            "slm_serving.engine=transformers", "slm_serving.extra_args=[]", "slm_serving.extra_body=null",
            "slm_serving.max_concurrency=8", "slm_serving.gpu_free_mib=null",
            "judge.llm_judge=false", "bertscore.model=hashed", "slm_batch_size=8", "runtime.slm_max_new_tokens=24",
            "runtime.llm_max_new_tokens=16", "progress=false")], workdir, walls)
        reports = list((workdir / "data/reports").rglob("report.md"))
        assert reports, "eval wrote no report"
        text = reports[0].read_text()
        assert "## Paired comparisons" in text and "| rl | control |" in text
        # every run's SLM through a server (the tiny model's rounds tie on validation, so the finals may all be the
        # SFT model: one server then serves every run), none generated in this process
        assert elog.count("serving SLM") >= 1 and "loaded SLM" not in elog, "the eval's SLMs were not served"
        assert (rl_dir / "final.json").exists() and (rl_dir / "control" / "final.json").exists()
        for r in (1, 2):  # the control arm: same questions, teacher dialogues, the same launcher
            assert (rl_dir / "control" / f"round-{r}" / "config.json").exists(), f"control round {r} missing"
    walls["total"] = round(time.perf_counter() - t0, 1)
    print("rehearsal wall times (s):", json.dumps(walls))


def _port() -> int:
    from seekhelp.backends.server import free_port

    return free_port()
