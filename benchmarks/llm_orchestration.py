"""Episodes per second of the LLM side of our runtime, and of the distilabel teacher step, against an instant endpoint.

    python -m benchmarks.llm_orchestration --episodes 500 [--batch-size 64] [--guard block|redact|off]

The LLM is `ScriptedServer` (a real OpenAI-compatible HTTP server on 127.0.0.1 that answers at once), reached
through our `OpenAIBackend`. Nothing is a model, so what is measured is our own overhead: the episode loop,
prompts, parsing, the outgoing guard, the OpenAI SDK, HTTP and the server's threads.

1. runtime: `Runtime.run` on `dynamic` episodes, with an in-process SLM backend that answers instantly with
   protocol text: ask, ask again, then answer. Each episode is 3 SLM turns and exactly 2 LLM calls.
2. teacher_step: `pipelines.steps.TeacherDialogues(teacher="runtime")`, the distilabel step that generates teacher
   dialogues by calling models (the default `knowledge` teacher calls none). It takes both roles from endpoints, so
   here the SLM is a second `ScriptedServer` with the same script (3 SLM + 2 LLM HTTP calls per episode). The step's
   `process` is called in-process on batches of `--batch-size` questions, as the pipeline feeds it; distilabel's
   process start-up and queues are not counted.

Target: >= 50 episodes/s for the runtime. Prints one JSON line with both rates and their ratio.
"""

import argparse
import json
import platform
import tempfile
import time

from seekhelp import protocol
from seekhelp.backends.base import Completion, GenParams
from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
from seekhelp.backends.scripted_server import ScriptedServer
from seekhelp.records import Question
from seekhelp.runtime import Runtime, RuntimeConfig

ASKS = 2  # LLM calls per episode


def questions(n: int) -> list[Question]:
    places = [("Peru", "Lima"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Norway", "Oslo"), ("Chile", "Santiago")]
    return [Question(question=f"My cousin no. {i} lives in {places[i % 5][0]} and I will visit her in its capital. "
                              "Which city is that?", answers=[places[i % 5][1]],
                     privacy_items=[f"The user's cousin no. {i} lives in {places[i % 5][0]}."], split="train")
            for i in range(n)]


def slm_script(conv: list[dict]) -> str:
    """Ask a general question, ask a follow-up, then answer (counts the expert's replies in the conversation)."""
    replies = sum(1 for m in conv if m["role"] == "user" and m["content"].startswith("<" + protocol.AGENT_REPLY))
    if replies < ASKS:
        ask = ["What is the capital city of Peru?", "Is Lima also the largest city of Peru?"][replies]
        return protocol.render_slm_turn("I need a general fact.", protocol.MESSAGE, ask)
    return protocol.render_slm_turn("The expert's notes give the city.", protocol.ANSWER, "Lima")


def llm_script(messages: list[dict]) -> str:
    return protocol.render_llm_turn("A geography fact.", protocol.INFORMATION, "The capital of Peru is Lima.")


class InstantSLM:
    """A ChatBackend that answers every conversation of a batch at once with `slm_script`."""

    name = "instant-slm"

    async def generate(self, conversations: list[list[dict]], params: GenParams) -> list[Completion]:
        return [Completion(text=slm_script(c), prompt_tokens=sum(len(m["content"]) for m in c) // 4,
                           completion_tokens=20) for c in conversations]


def check(trajs, n: int) -> None:
    bad = [(t.stop_reason, t.error) for t in trajs if t.stop_reason != "answer" or t.n_llm_calls != ASKS]
    if len(trajs) != n or bad:
        raise SystemExit(f"benchmark script broken: {len(trajs)} of {n} episodes, {len(bad)} not answering after "
                         f"{ASKS} LLM calls (first: {bad[:1]})")


def bench_runtime(qs: list[Question], base_url: str, guard: str, concurrency: int) -> float:
    llm = OpenAIBackend(EndpointConfig(base_url=base_url, model="scripted", max_concurrency=concurrency))
    rt = Runtime(InstantSLM(), llm, RuntimeConfig(guard=guard))
    rt.run(qs[:4])  # warm-up: imports, prompts, first connections
    t0 = time.perf_counter()
    trajs = rt.run(qs)
    wall = time.perf_counter() - t0
    check(trajs, len(qs))
    return wall


def bench_teacher_step(qs: list[Question], llm_url: str, slm_url: str, batch_size: int) -> float:
    from distilabel.pipeline import Pipeline

    from pipelines.steps import TeacherDialogues

    cfg = {"slm_endpoint": {"base_url": slm_url, "model": "scripted-slm"},
           "llm_endpoint": {"base_url": llm_url, "model": "scripted"}, "temperature": 0.7, "n_max": 4, "ground": False}
    with tempfile.TemporaryDirectory(prefix="seekhelp-bench-") as tmp, Pipeline(name="bench", cache_dir=tmp):
        step = TeacherDialogues(teacher="runtime", samples=1, runtime_config=cfg, input_batch_size=batch_size)
    step.load()
    rows = [{"question_json": json.dumps(q.to_dict())} for q in qs]
    next(step.process([dict(r) for r in rows[:4]]))  # warm-up
    t0 = time.perf_counter()
    out = [row for lo in range(0, len(rows), batch_size) for row in next(step.process(rows[lo:lo + batch_size]))]
    wall = time.perf_counter() - t0
    errors = [r["teacher_error"] for r in out if r["teacher_error"]]
    if errors:
        raise SystemExit(f"teacher step failed: {errors[0]}")
    from seekhelp.records import Trajectory

    check([Trajectory.from_dict(t) for r in out for t in json.loads(r["trajectories_json"])], len(qs))
    return wall


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Episodes/s of the runtime and the teacher step on an instant LLM.")
    ap.add_argument("--episodes", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=64, help="questions per teacher-step batch (recipe default)")
    ap.add_argument("--guard", default="block", choices=["block", "redact", "off"], help="runtime guard mode")
    ap.add_argument("--concurrency", type=int, default=16, help="OpenAIBackend max_concurrency (its default)")
    ap.add_argument("--skip-teacher", action="store_true")
    args = ap.parse_args(argv)
    qs = questions(args.episodes)
    with ScriptedServer(reply=llm_script) as llm, ScriptedServer(reply=slm_script) as slm:
        t_rt = bench_runtime(qs, llm.base_url, args.guard, args.concurrency)
        t_teach = None if args.skip_teacher else bench_teacher_step(qs, llm.base_url, slm.base_url, args.batch_size)
        llm_requests, slm_requests = len(llm.requests), len(slm.requests)
    n = args.episodes
    out = {"figure": "llm_orchestration", "machine": platform.processor() or platform.machine(), "episodes": n,
           "llm_calls_per_episode": ASKS, "guard": args.guard, "concurrency": args.concurrency,
           "runtime_episodes_per_s": round(n / t_rt, 1), "runtime_llm_calls_per_s": round(ASKS * n / t_rt, 1),
           "runtime_wall_s": round(t_rt, 2), "runtime_target_met": n / t_rt >= 50,
           "llm_requests": llm_requests, "slm_requests": slm_requests}
    if t_teach is not None:
        out |= {"teacher_step_episodes_per_s": round(n / t_teach, 1), "teacher_step_wall_s": round(t_teach, 2),
                "batch_size": args.batch_size, "runtime_vs_teacher_step": round(t_teach / t_rt, 2)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
