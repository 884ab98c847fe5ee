"""Episodes per minute of the batched runtime vs the same episodes run one at a time (same run, same model).

    python -m benchmarks.rollouts --episodes 32 [--slm smollm2-135m] [--llm scripted|embedded|URL]

`--llm scripted` uses an instant local OpenAI-compatible server (so only the SLM side and our overhead count);
`embedded` starts `transformers serve` on SmolLM2-135M. Prints one JSON line with the figures and the ratio.
"""

import argparse
import contextlib
import json
import platform
import time

from seekhelp.backends.local import TransformersBackend
from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
from seekhelp.backends.scripted_server import ScriptedServer
from seekhelp.backends.server import serve
from seekhelp.records import Question
from seekhelp.runtime import Runtime, RuntimeConfig


def questions(n: int) -> list[Question]:
    countries = ["Peru", "Japan", "Kenya", "Norway", "Chile", "Egypt", "Nepal", "Spain"]
    return [Question(question=f"My friend number {i} moved to the capital of {countries[i % 8]}. Which city is it?",
                     answers=["?"], privacy_items=[f"The user's friend number {i} moved to {countries[i % 8]}."])
            for i in range(n)]


@contextlib.contextmanager
def llm_endpoint(kind: str):
    if kind == "scripted":
        with ScriptedServer(reply=lambda m: "<information>The capital is listed in the atlas.</information>") as s:
            yield OpenAIBackend(EndpointConfig(base_url=s.base_url, model="scripted"))
    elif kind == "embedded":
        with serve("smollm2-135m") as srv:
            yield OpenAIBackend(EndpointConfig(base_url=srv.base_url, model=srv.model, label=srv.label))
    else:
        yield OpenAIBackend(EndpointConfig(base_url=kind))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--slm", default="smollm2-135m")
    ap.add_argument("--llm", default="scripted")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    args = ap.parse_args()
    slm = TransformersBackend(args.slm, max_batch_size=args.episodes)
    qs = questions(args.episodes)
    cfg = RuntimeConfig(slm_max_new_tokens=args.max_new_tokens, llm_max_new_tokens=args.max_new_tokens, guard="off")
    with llm_endpoint(args.llm) as llm:
        rt = Runtime(slm, llm, cfg)
        rt.run(qs[:2])  # warm-up
        t0 = time.perf_counter()
        batched = rt.run(qs)
        t_batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        one_by_one = [rt.run([q])[0] for q in qs]
        t_seq = time.perf_counter() - t0
    turns = sum(len(t.turns) for t in batched)
    out = {"figure": "rollouts", "machine": platform.processor() or platform.machine(), "episodes": args.episodes,
           "slm": args.slm, "llm": args.llm, "turns_batched": turns,
           "turns_sequential": sum(len(t.turns) for t in one_by_one),
           "episodes_per_min_batched": round(args.episodes / t_batched * 60, 1),
           "episodes_per_min_sequential": round(args.episodes / t_seq * 60, 1),
           "speedup": round(t_seq / t_batched, 2), "wall_batched_s": round(t_batched, 1),
           "wall_sequential_s": round(t_seq, 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
