"""Episodes per minute of the batched runtime at several batch sizes, against one-at-a-time and raw `generate`.

    python -m benchmarks.rollouts [--sizes 1,8,32] [--slm smollm2-135m|MODEL_DIR] [--llm scripted|embedded|URL]

For each size N, the same N `dynamic` episodes (greedy, so both runs make the same turns) are run
  - batched: one `Runtime.run` over all N (one batched `generate` per SLM step, LLM calls concurrent), and
  - one at a time: N separate `Runtime.run` calls of one episode each;
speedup = wall(one at a time) / wall(batched). At the largest size, the ceiling: raw batched `model.generate` on the
same N first-turn prompts producing the same number of SLM tokens as the batched runtime did (fixed length, no stop
strings, no parsing, no LLM), once plain and once with the same shared-prefix KV cache the backend uses;
efficiency = runtime SLM tokens/s ÷ raw tokens/s. Against the prefix-cached ceiling, 1 - efficiency is the runtime's
own overhead (turn loop, parsing, stop strings, later turns' longer prompts, padding waste when episodes stop at
different lengths).

`--llm scripted` (default) is an instant local OpenAI-compatible server, so the LLM costs nothing and the figures are
about the SLM side and our own code; `embedded` starts `transformers serve` on SmolLM2-135M. One JSON line.
"""

import argparse
import contextlib
import json
import math
import platform
import time

from seekhelp.backends.local import TransformersBackend
from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
from seekhelp.backends.scripted_server import ScriptedServer
from seekhelp.conversation import slm_messages
from seekhelp.prompts import load_prompt
from seekhelp.records import Question
from seekhelp.runtime import Runtime, RuntimeConfig

COUNTRIES = ["Peru", "Japan", "Kenya", "Norway", "Chile", "Egypt", "Nepal", "Spain"]


def questions(n: int, offset: int = 0) -> list[Question]:
    return [Question(question=f"My friend number {i} moved to the capital of {COUNTRIES[i % 8]}. Which city is it?",
                     answers=["?"], privacy_items=[f"The user's friend number {i} moved to {COUNTRIES[i % 8]}."])
            for i in range(offset, offset + n)]


@contextlib.contextmanager
def llm_endpoint(kind: str):
    if kind == "scripted":
        with ScriptedServer(reply=lambda m: "<information>The capital is listed in the atlas.</information>") as s:
            yield OpenAIBackend(EndpointConfig(base_url=s.base_url, model="scripted"))
    elif kind == "embedded":
        from seekhelp.backends.server import serve

        with serve("smollm2-135m") as srv:
            yield OpenAIBackend(EndpointConfig(base_url=srv.base_url, model=srv.model, label=srv.label))
    else:
        yield OpenAIBackend(EndpointConfig(base_url=kind))


def slm_tokens(trajs) -> int:
    return sum(t.completion_tokens for tr in trajs for t in tr.turns if t.role == "slm")


def raw_generate_s(slm: TransformersBackend, qs: list[Question], new_tokens: int, prefix_cache: bool) -> float:
    """Wall time of one batched `model.generate` of `new_tokens` per prompt on the first-turn prompts: plain
    (the whole prompt prefilled per row), or with the backend's shared-prefix cache (the same trick the runtime
    uses, so the difference to the runtime is the runtime's own overhead)."""
    import torch

    system = load_prompt("slm_dynamic")
    prompts = slm.render_prompts([slm_messages(system, q, []) for q in qs])
    tok = slm.tokenizer
    with torch.inference_mode():
        t0 = time.perf_counter()
        if prefix_cache:
            enc, cache = slm._encode(prompts)
            extra = {"cache": cache} if cache is not None else {}
        else:
            enc, extra = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False), {}
        slm.model.generate(**enc, **extra, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                           temperature=None, top_p=None, top_k=None, pad_token_id=tok.pad_token_id)
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="Runtime episodes/min: batched vs one at a time vs raw generate.")
    ap.add_argument("--sizes", default="1,8,32")
    ap.add_argument("--slm", default="smollm2-135m")
    ap.add_argument("--llm", default="scripted")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    slm = TransformersBackend(args.slm, max_batch_size=max(sizes))
    cfg = RuntimeConfig(slm_max_new_tokens=args.max_new_tokens, llm_max_new_tokens=args.max_new_tokens, guard="off")
    rows = []
    with llm_endpoint(args.llm) as llm:
        rt = Runtime(slm, llm, cfg)
        rt.run(questions(2, offset=1000))  # warm-up (threads, allocator, HTTP pool)
        for n in sizes:
            qs = questions(n)
            t0 = time.perf_counter()
            batched = rt.run(qs)
            t_b = time.perf_counter() - t0
            t0 = time.perf_counter()
            single = [rt.run([q])[0] for q in qs]
            t_s = time.perf_counter() - t0
            rows.append({"episodes": n, "batched_eps_per_min": round(n / t_b * 60, 1),
                         "one_at_a_time_eps_per_min": round(n / t_s * 60, 1), "speedup": round(t_s / t_b, 2),
                         "slm_turns": sum(1 for tr in batched for t in tr.turns if t.role == "slm"),
                         "slm_tokens": slm_tokens(batched), "slm_tokens_one_at_a_time": slm_tokens(single),
                         "wall_batched_s": round(t_b, 2), "wall_one_at_a_time_s": round(t_s, 2)})
        top = rows[-1]
        per_prompt = max(1, math.ceil(top["slm_tokens"] / top["episodes"]))
        t_raw = raw_generate_s(slm, questions(top["episodes"]), per_prompt, prefix_cache=False)
        t_raw_pc = raw_generate_s(slm, questions(top["episodes"]), per_prompt, prefix_cache=True)
    raw_tps, raw_pc_tps = per_prompt * top["episodes"] / t_raw, per_prompt * top["episodes"] / t_raw_pc
    runtime_tps = top["slm_tokens"] / top["wall_batched_s"]
    out = {"figure": "rollouts", "machine": platform.processor() or platform.machine(), "slm": args.slm,
           "llm": args.llm, "max_new_tokens": args.max_new_tokens, "sizes": rows,
           "raw_generate": {"episodes": top["episodes"], "new_tokens_per_prompt": per_prompt,
                            "tokens_per_s": round(raw_tps, 1), "wall_s": round(t_raw, 2),
                            "prefix_cached_tokens_per_s": round(raw_pc_tps, 1),
                            "prefix_cached_wall_s": round(t_raw_pc, 2)},
           "runtime_tokens_per_s": round(runtime_tps, 1),
           "efficiency_vs_raw_generate": round(runtime_tps / raw_tps, 3),
           "efficiency_vs_prefix_cached_generate": round(runtime_tps / raw_pc_tps, 3)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
