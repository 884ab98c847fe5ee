"""A rehearsal of the GPU path on CPU: the GPU recipes of the repo, chained data → sft → rl (2 rounds) → eval → push,
each stage through its Make target (`make data`, `make sft NUM_GPUS=2`, `make rl`, `make eval`, `make push`), as the
README's commands run them.

What is swapped, by `--set` only (the recipes' own paths are kept, so the chain is theirs): models for a tiny random
Llama, every LLM endpoint for a scripted local OpenAI-compatible server, the 8-GPU ZeRO-3 launches for
`accelerate launch` with 2 CPU processes (gloo, sft/accelerate/cpu.yaml), and the vLLM policy server for
`transformers serve` on each round's checkpoint (rollouts are HTTP calls to it). Seeds are the offline set instead
of the Hub's, so the knowledge teacher can write dialogues that SFT learns from. Every stage runs in a temporary
folder that holds `data/`, with the repository's recipes, queries and templates linked in, so each artifact must
appear exactly where the next recipe reads it. The SFT start carries a Qwen3-style chat template (thinking,
earlier turns' <think> blocks dropped); the recipe's ChatML template must replace it, in training and in the saved
tokenizer the policy server and the eval read. A second test runs `make data` with the GPU data recipe's own seeds,
LLM injection, runtime teacher and LLM judge, reading every set it names from local files in FlashRAG's layout
(`seeds.hub_path`), after a run with a model id the server does not serve has stopped in one line.

    make test-rehearsal        (pytest -m rehearsal; minutes, not part of `make test`)
"""

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seekhelp.backends.scripted_server import ScriptedServer, default_reply
from tests.fakes import INJECT_AND_JUDGE_REPLY
from tests.reliability.conftest import ROOT, child_env

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


def make(name: str, target: str, variables: dict[str, str | list[str]], cwd: Path, walls: dict,
         timeout: float = 900, fails: bool = False) -> str:
    """`make <target> VAR=...` in `cwd` with the project's venv; a list value becomes a shell-quoted argument list
    (what a user writes inside RL_ARGS="..."). Returns stdout + stderr; `fails`: the target must fail instead."""
    # -o: the venv checked current at the start is never rebuilt under the running test (an edit to pyproject.toml
    # meanwhile would otherwise make `install` wipe it)
    argv = ["make", "-f", str(ROOT / "Makefile"), "--no-print-directory", f"VENV={sys.prefix}",
            "-o", f"{sys.prefix}/.installed", target]
    argv += [f"{k}={shlex.join(v) if isinstance(v, list) else v}" for k, v in variables.items()]
    t0 = time.perf_counter()
    res = subprocess.run(argv, cwd=cwd, env=child_env(SEEKHELP_SERVE_DEVICE="cpu", OMP_NUM_THREADS="1"),
                         capture_output=True, text=True, timeout=timeout, errors="replace")
    walls[name] = round(time.perf_counter() - t0, 1)
    assert (res.returncode != 0) == fails, f"{name}: rc {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    return res.stdout + res.stderr


# A Qwen3-style template in our own words: it renders thinking per turn and, as Qwen3's own templates do, drops the
# <think> block of every assistant turn before the last user message. Trained on as is, the SLM would never see its
# earlier reasoning; the SFT recipe's chat_template_path must win.
QWEN3_STYLE = (
    "{%- set ns = namespace(last_user=0) -%}{%- for m in messages -%}{%- if m['role'] == 'user' -%}"
    "{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}"
    "{%- for m in messages -%}{%- set c = m['content'] -%}"
    "{%- if m['role'] == 'assistant' and loop.index0 < ns.last_user and '</think>' in c -%}"
    "{%- set c = c.split('</think>')[-1].lstrip() -%}{%- endif -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + c + '<|im_end|>\\n' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and not enable_thinking -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}")
DIALOGUE = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
            {"role": "assistant", "content": "<think>first plan</think>\n<message>m</message>"},
            {"role": "user", "content": "<information>i</information>"},
            {"role": "assistant", "content": "<think>second</think>\n<answer>a</answer>"}]


@pytest.fixture
def qwen3_style_start(tiny_model_dir, tmp_path) -> str:
    """The tiny model with the Qwen3-style template as its tokenizer's own."""
    import shutil

    from transformers import AutoTokenizer

    out = tmp_path / "tiny-qwen3-style"
    shutil.copytree(tiny_model_dir, out)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = QWEN3_STYLE
    tok.save_pretrained(out)
    assert "first plan" not in tok.apply_chat_template(DIALOGUE, tokenize=False)  # the template does drop it
    return str(out)


def _venv_is_current() -> None:
    """`make` would rebuild a stale venv (rm -rf) under the running tests: insist on `make install` first."""
    q = subprocess.run(["make", "-q", "-f", str(ROOT / "Makefile"), f"VENV={sys.prefix}", "install"], cwd=ROOT,
                       capture_output=True, text=True)
    if q.returncode != 0:
        pytest.fail(f"the venv {sys.prefix} is not current with the lock: run `make install` (make test-rehearsal "
                    "does) before this test")


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A folder in which the recipes' relative paths resolve: repo code linked in, `data/` of its own."""
    for name in ("sft", "rl", "evals", "pipelines", "requirements", "pyproject.toml"):  # the last two: `install`
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "queries").symlink_to(ROOT / "data" / "queries")
    return tmp_path


def test_gpu_recipes_chain_on_cpu(workdir, qwen3_style_start):
    _venv_is_current()
    walls: dict[str, float] = {}
    t0 = time.perf_counter()
    with ScriptedServer(reply) as llm:
        endpoint = [f"endpoint.base_url={llm.base_url}", "endpoint.model=scripted"]
        # data: the GPU data recipe (LLM judge in chunks against the local server), offline seeds, knowledge teacher
        out = make("data", "data", {"DATA_RECIPE": str(DATA), "DATA_ARGS": sets(
            "seeds.kind=offline", "seeds.n_per_split={train: 24, validation: 6, test: 6}", "injection.kind=offline",
            "teacher.kind=knowledge", "teacher.samples=2", "judge.limit=16",
            "judge.chunk_size=8", *endpoint)}, workdir, walls)
        store = workdir / "data/store.duckdb"
        assert store.exists() and "questions" in out  # `make data` ends with `seekhelp stats` on the recipe's store

        # sft: the GPU SFT recipe through `make sft NUM_GPUS=2` (accelerate launch, 2 CPU processes); it exports
        # from the store itself, and its ChatML template replaces the start's Qwen3-style one
        sft_out = workdir / "data/models/sft/qwen3-4b-gpu"
        make("sft", "sft", {"NUM_GPUS": "2", "ACCELERATE_CONFIG": "cpu", "SFT_RECIPE": SFT,
                            "ACCELERATE_ARGS": ["--main_process_port", str(_port())],
                            "SFT_ARGS": ["--model_name_or_path", qwen3_style_start, "--per_device_train_batch_size",
                                         "2", "--eval_holdout", "4", "--per_device_eval_batch_size", "2",
                                         *CPU_TRAIN]}, workdir, walls)
        assert (sft_out / "config.json").exists() and (sft_out / "recipe.yaml").exists()
        from transformers import AutoTokenizer

        rendered = AutoTokenizer.from_pretrained(sft_out).apply_chat_template(DIALOGUE, tokenize=False)
        assert "<think>first plan</think>" in rendered and "<think>second</think>" in rendered, rendered

        # rl: 2 rounds; rollouts through `transformers serve` on each checkpoint, retrain via accelerate (2 procs)
        overrides = json.dumps(["--learning_rate", "1.0e-5", "--per_device_train_batch_size", "2", "--eval_strategy",
                                "no", "--eval_holdout", "0", *CPU_TRAIN])  # as the recipe's own: no eval per round
        log = make("rl", "rl", {"RL_RECIPE": str(RL), "RL_ARGS": sets(
            "rounds=2", "k=1", "train_questions=8", "validation_questions=4", "easy_k=1", "n_max=2",
            "slm_max_new_tokens=24", "llm_max_new_tokens=16", "batch_size=8", "min_reward=-100",
            f"llm.base_url={llm.base_url}", "llm.model=scripted", "policy.kind=server", "policy.engine=transformers",
            "policy.extra_args=[]", "policy.extra_body=null",  # vLLM sampling fields: transformers serve refuses them
            "policy.max_concurrency=8", "retrain.accelerate_config=sft/accelerate/cpu.yaml",
            "retrain.num_processes=2", "retrain.sft_processes=1", f"sft_overrides={overrides}")}, workdir, walls)
        assert log.count("served at http://127.0.0.1:") >= 3, "rollouts/validation did not go through the server"
        assert log.count("accelerate.commands.launch") == 4, "the RL and control retrains did not use accelerate"
        rl_dir = workdir / "data/models/rl/qwen3-4b"
        for r in (1, 2):
            assert (rl_dir / f"round-{r}" / "config.json").exists(), f"round {r} checkpoint missing"
            assert (rl_dir / f"round-{r}-data").is_dir()

        # eval: the GPU eval recipe's trained SLMs (its own paths) against the local server
        ep = [{"name": n, "base_url": llm.base_url, "model": "scripted", "label": n, "ground": False}
              for n in ("main", "unseen")]
        elog = make("eval", "eval", {"EVAL_RECIPE": str(EVAL), "EVAL_ARGS": sets(
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
            "runtime.llm_max_new_tokens=16", "progress=false")}, workdir, walls)
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

    # push: `make push` with every recipe of the chain, staged (--dry-run): the dataset, the SFT model, one revision
    # per RL round and the round kept on validation on main
    final = json.loads((rl_dir / "final.json").read_text())["checkpoint"]  # round 0 = the SFT model if it won
    plog = make("push", "push", {"DATA_RECIPE": str(DATA), "SFT_RECIPE": SFT, "RL_RECIPE": str(RL),
                                 "HUB_DATASET": "org/ds", "HUB_MODEL": "org/sft", "HUB_RL_MODEL": "org/rl",
                                 "PUSH_ARGS": "--dry-run"}, workdir, walls)
    staged = [line for line in plog.splitlines() if line.startswith("staged ")]
    assert any(line == f"staged model {final} -> org/rl@main" for line in staged), plog[-3000:]
    assert any("-> org/ds" in line for line in staged) and any("-> org/sft" in line for line in staged), staged
    walls["total"] = round(time.perf_counter() - t0, 1)
    print("rehearsal wall times (s):", json.dumps(walls))


def data_reply(messages: list[dict]) -> str:
    """The data recipe's endpoints on one scripted server: the injection steps and the judge get one JSON with every
    key they read; the teacher's SLM role asks once, then answers; the teacher's LLM role gets `default_reply`."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    if system.startswith(("You help build training data", "You review rewritten", "You audit what")):
        return INJECT_AND_JUDGE_REPLY
    if system.startswith("Answer the user's question."):  # slm_dynamic: the teacher's SLM role
        if any("<information>" in m["content"] for m in messages[1:]):
            return "<think>The reply has it.</think>\n<answer>Paris</answer>"
        return "<think>I ask for the public fact alone.</think>\n<message>What is the capital of France?</message>"
    return default_reply(messages)




def flashrag_folder(root: Path) -> Path:
    """A local folder in FlashRAG's layout (<set>/<split>.jsonl) with every set and split the GPU recipe reads."""
    wanted = {"nq": ("train", "dev", "test"), "hotpotqa": ("train", "dev"), "triviaqa": ("test",),
              "popqa": ("test",), "2wikimultihopqa": ("dev",), "musique": ("dev",)}
    for name, splits in wanted.items():
        (root / name).mkdir(parents=True)
        for split in splits:
            # distinct answers: the scripted injection writes one question text for every seed, and a question's id
            # is a hash of its text and answers
            rows = [{"id": f"{name}-{split}-{i}", "question": f"Which city is the capital of France, case {name} "
                     f"{split} {i}?", "golden_answers": [f"Paris {name} {split} {i}"]} for i in range(3)]
            (root / name / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_gpu_data_recipe_reads_flashrag_files_through_make(workdir, tmp_path):
    """`make data` with the GPU data recipe as written (hub seeds, LLM injection, the runtime teacher with both roles
    served, the LLM judge), only `seeds.hub_path` pointing at local files and the endpoints at one local server."""
    _venv_is_current()
    walls: dict[str, float] = {}
    folder = flashrag_folder(tmp_path / "flashrag")
    with ScriptedServer(data_reply, models=["scripted"]) as srv:
        url = srv.base_url
        args = [f"seeds.hub_path={folder}", "teacher.samples=1", f"endpoint.base_url={url}", "endpoint.model=scripted",
                f"teacher.slm.base_url={url}", "teacher.slm.model=scripted", "teacher.slm.extra_body=null",
                f"teacher.llm.base_url={url}", "teacher.llm.model=scripted", "teacher.llm.extra_body=null"]
        # a model id the server does not serve stops the stage at start-up, in one line, before any work
        wrong = make("wrong id", "data", {"DATA_RECIPE": str(DATA), "DATA_ARGS": sets(
            *args, "teacher.llm.model=Qwen/Qwen3-235B")}, workdir, walls, timeout=120, fails=True)
        assert "'Qwen/Qwen3-235B' is not served there (served: scripted)" in wrong, wrong[-3000:]
        assert not srv.requests and not (workdir / "data/store.duckdb").exists() and walls["wrong id"] < 60
        out = make("data", "data", {"DATA_RECIPE": str(DATA), "DATA_ARGS": sets(*args)}, workdir, walls, timeout=600)
        assert srv.requests, "no endpoint was called"
    import duckdb

    con = duckdb.connect(str(workdir / "data/store.duckdb"), read_only=True)
    by = dict(con.sql("SELECT source || '/' || split, count(*) FROM questions GROUP BY ALL").fetchall())
    # every source and split the recipe names, read from the local files (3 rows each; hotpotqa's validation is
    # carved from its train file, so those 3 rows go to one side or the other)
    for key in ("nq/train", "nq/validation", "nq/test", "hotpotqa/test", "triviaqa/test", "popqa/test",
                "2wikimultihopqa/test", "musique/test"):
        assert by.get(key) == 3, (key, by)
    assert by.get("hotpotqa/train", 0) + by.get("hotpotqa/validation", 0) == 3, by
    teacher = con.sql("SELECT count(*) FROM trajectories t JOIN questions q ON q.id = t.question_id "
                      "WHERE q.split = 'train'").fetchall()[0][0]
    judged = con.sql("SELECT count(*) FROM judgments").fetchall()[0][0]
    con.close()
    assert teacher > 0 and judged > 0 and "questions" in out, (teacher, judged)
    print("flashrag data rehearsal (s):", json.dumps(walls))


def _port() -> int:
    from seekhelp.backends.server import free_port

    return free_port()
