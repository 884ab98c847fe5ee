"""Episodes/s of the SLM side with the static engine (`model.generate` per micro-batch) vs the slot engine (refill
finished rows, keys/values kept across turns), both against the same prefix-cached raw `generate` ceiling.

    python -m benchmarks.rollout_engine [--sizes 32,128] [--turns 2,3] [--batch 32] [--slm smollm2-135m]
                                        [--max-new-tokens 64] [--modes replay,runtime]

Two workloads, each at every size N, each run with both engines on the same loaded model (greedy, so the engines
must produce the same texts; `same_texts` says how many did):
  - `replay`: N multi-turn conversations driven the way the runtime drives them: one batched `generate` per step
    over every live conversation; each conversation's next prompt is its previous prompt + the SLM's generated
    turn + a fixed expert reply; conversation i runs `turns[i % len(turns)]` SLM turns. This is what exercises the
    cross-turn cache: the base SmolLM2 does not follow the protocol, so real `dynamic` episodes end after one turn.
  - `runtime`: N real `dynamic` episodes through `Runtime.run` with the instant scripted LLM server (the LLM is
    free); with the base model mostly one SLM turn each.
Ceiling: raw batched `model.generate` of the same number of SLM tokens per episode (fixed length, no stop strings)
on the first-turn prompts, in micro-batches of `--batch`, with the backend's shared-prefix cache (see
`benchmarks/rollouts.py`). `*_vs_ceiling` = engine SLM tokens/s ÷ ceiling tokens/s. One JSON line.
"""

import argparse
import json
import math
import platform
import time

from benchmarks.rollouts import llm_endpoint, questions, raw_generate_s
from seekhelp import protocol
from seekhelp.backends.base import GenParams, generate_sync
from seekhelp.backends.local import TransformersBackend
from seekhelp.conversation import slm_messages
from seekhelp.prompts import load_prompt
from seekhelp.runtime import Runtime, RuntimeConfig

REPLY = protocol.render_agent_reply(protocol.INFORMATION, "The capital is listed in the atlas.")
ENGINES = ("static", "slots")


def replay(slm: TransformersBackend, n: int, turns: list[int], max_new_tokens: int) -> dict:
    """N conversations of 2-3 SLM turns, one batched generate per step over the live ones."""
    system = load_prompt("slm_dynamic")
    convs = [slm_messages(system, q, []) for q in questions(n)]
    todo = [turns[i % len(turns)] for i in range(n)]
    params = GenParams(max_new_tokens=max_new_tokens, stop=list(protocol.SLM_STOP))
    texts: list[list[str]] = [[] for _ in range(n)]
    tokens = steps = 0
    t0 = time.perf_counter()
    while live := [i for i in range(n) if len(texts[i]) < todo[i]]:
        outs = generate_sync(slm, [convs[i] for i in live], params)
        steps += 1
        for i, o in zip(live, outs, strict=True):
            texts[i].append(o.text)
            tokens += o.completion_tokens
            convs[i] = convs[i] + [{"role": "assistant", "content": o.text}, {"role": "user", "content": REPLY}]
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "slm_tokens": tokens, "slm_turns": sum(todo), "steps": steps, "texts": texts}


def runtime(slm: TransformersBackend, llm, n: int, max_new_tokens: int) -> dict:
    cfg = RuntimeConfig(slm_max_new_tokens=max_new_tokens, llm_max_new_tokens=max_new_tokens, guard="off")
    t0 = time.perf_counter()
    trajs = Runtime(slm, llm, cfg).run(questions(n))
    wall = time.perf_counter() - t0
    slm_turns = [t for tr in trajs for t in tr.turns if t.role == "slm"]
    return {"wall_s": wall, "slm_tokens": sum(t.completion_tokens for t in slm_turns), "slm_turns": len(slm_turns),
            "texts": [[t.raw for t in tr.turns if t.role == "slm"] for tr in trajs]}


def ceiling_tps(slm: TransformersBackend, n: int, per_prompt: int, batch: int) -> float:
    """Prefix-cached raw generate of `per_prompt` tokens on N first-turn prompts, micro-batches of `batch`."""
    qs = questions(n)
    wall = sum(raw_generate_s(slm, qs[i:i + batch], per_prompt, prefix_cache=True) for i in range(0, n, batch))
    return per_prompt * n / wall


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="SLM episodes/s: static vs slot engine vs prefix-cached generate.")
    ap.add_argument("--sizes", default="32,128")
    ap.add_argument("--turns", default="2,3", help="SLM turns per replayed conversation, cycled over them")
    ap.add_argument("--batch", type=int, default=32, help="max_batch_size of both engines and of the ceiling")
    ap.add_argument("--slm", default="smollm2-135m")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--modes", default="replay,runtime")
    args = ap.parse_args(argv)
    sizes, turns = [int(s) for s in args.sizes.split(",")], [int(t) for t in args.turns.split(",")]
    modes = args.modes.split(",")
    static = TransformersBackend(args.slm, max_batch_size=args.batch, engine="static")
    backends = {"static": static,
                "slots": TransformersBackend(model=static.model, tokenizer=static.tokenizer, name=static.name,
                                             max_batch_size=args.batch, engine="slots")}
    rows = []
    with llm_endpoint("scripted") as llm:
        for b in backends.values():  # warm-up (threads, allocator, HTTP pool), then a cold KV store
            replay(b, 2, [2], 8)
            runtime(b, llm, 2, 8)
        for mode in modes:
            for n in sizes:
                res = {}
                for name in ENGINES:
                    b = backends[name]
                    b.kv_store.clear()
                    before, evicted = dict(b.stats), b.kv_store.evicted
                    r = replay(b, n, turns, args.max_new_tokens) if mode == "replay" else \
                        runtime(b, llm, n, args.max_new_tokens)
                    r["evicted"] = b.kv_store.evicted - evicted
                    r["stats"] = {k: v - before.get(k, 0) for k, v in b.stats.items()}
                    res[name] = r
                per_prompt = max(1, math.ceil(res["static"]["slm_tokens"] / n))
                ceiling = ceiling_tps(static, n, per_prompt, args.batch)
                row = {"mode": mode, "episodes": n, "ceiling_tokens_per_s": round(ceiling, 1),
                       "ceiling_new_tokens_per_prompt": per_prompt,
                       "same_texts": sum(a == c for a, c in zip(res["static"]["texts"], res["slots"]["texts"],
                                                                strict=True))}
                for name, r in res.items():
                    tps = r["slm_tokens"] / r["wall_s"]
                    row[name] = {"episodes_per_s": round(n / r["wall_s"], 3), "slm_tokens_per_s": round(tps, 1),
                                 "wall_s": round(r["wall_s"], 2), "slm_tokens": r["slm_tokens"],
                                 "slm_turns": r["slm_turns"], "vs_ceiling": round(tps / ceiling, 3)}
                    if name == "slots":
                        keys = ("prefill_tokens", "prefill_padding", "cached_tokens_reused", "turn_cache_hits",
                                "refills", "refills_in_place", "decode_steps")
                        row[name]["stats"] = {k: r["stats"][k] for k in keys}
                        row[name]["stats"]["kv_store_tokens"] = b.kv_store.tokens
                        row[name]["stats"]["kv_store_evicted"] = r["evicted"]
                row["slots_vs_static_episodes_per_s"] = round(res["static"]["wall_s"] / res["slots"]["wall_s"], 3)
                rows.append(row)
    out = {"figure": "rollout_engine", "machine": platform.processor() or platform.machine(), "slm": args.slm,
           "batch": args.batch, "max_new_tokens": args.max_new_tokens, "turns": turns, "rows": rows}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
