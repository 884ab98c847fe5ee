"""What one RL round costs at GPU scale, simulated on CPU: the real runtime and client against two local servers
that behave like busy GPU servers (a fixed time per request, at most `capacity` requests decoding at once).

    python -m benchmarks.round_cost [--episodes 512] [--time-scale 0.02]

The policy server (the SLM turns, `vllm serve` on the round's checkpoint) and the LLM server (the 235B expert) are
`ScriptedServer`s whose reply waits `latency × time-scale` seconds inside a semaphore of `capacity` slots. Episodes
are the `llm_orchestration` script: 3 SLM turns and 2 LLM calls each. The same episodes run with the client's
`max_concurrency` at 16 (the default before the GPU recipes set it) and at 256 (what `rl/recipes/qwen3-4b/gpu.yaml`
sends to both servers), and the measured wall time is scaled back by 1 / time-scale and to the recipe's round
(`--round-episodes`, 20k questions x K=4 by default). The latencies and capacities are assumptions, printed with
the result; what the run measures is how our runtime fills the servers: the alternation of all SLM turns then all
LLM calls, and the client's concurrency cap.
"""

import argparse
import json
import platform
import threading
import time

from benchmarks.llm_orchestration import ASKS, check, llm_script, questions, slm_script
from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
from seekhelp.backends.scripted_server import ScriptedServer
from seekhelp.runtime import Runtime, RuntimeConfig


def busy(script, latency_s: float, capacity: int):
    """A reply function that holds one of `capacity` decode slots for `latency_s` seconds."""
    slots = threading.BoundedSemaphore(capacity)

    def reply(messages: list[dict]) -> str:
        with slots:
            time.sleep(latency_s)
        return script(messages)

    return reply


def one_round(qs, slm_url: str, llm_url: str, concurrency: int) -> float:
    slm = OpenAIBackend(EndpointConfig(base_url=slm_url, model="scripted", max_concurrency=concurrency))
    llm = OpenAIBackend(EndpointConfig(base_url=llm_url, model="scripted", max_concurrency=concurrency))
    rt = Runtime(slm, llm, RuntimeConfig(guard="off", n_max=ASKS + 1))
    t0 = time.perf_counter()
    trajs = rt.run(qs)
    wall = time.perf_counter() - t0
    check(trajs, len(qs))
    return wall


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="An RL round's wall time at GPU scale, simulated servers.")
    ap.add_argument("--episodes", type=int, default=512, help="episodes actually run per setting")
    ap.add_argument("--round-episodes", type=int, default=80_000, help="the recipe's round: questions x K")
    ap.add_argument("--slm-latency", type=float, default=1.5, help="s per SLM turn on the policy server (assumed)")
    ap.add_argument("--llm-latency", type=float, default=3.0, help="s per LLM reply on the 235B server (assumed)")
    ap.add_argument("--capacity", type=int, default=256, help="requests each server decodes at once (assumed)")
    ap.add_argument("--time-scale", type=float, default=0.2, help="simulated seconds per assumed second")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 256])
    args = ap.parse_args(argv)
    qs = questions(args.episodes)
    out = {"machine": platform.machine(), "episodes_run": args.episodes, "round_episodes": args.round_episodes,
           "assumed": {"slm_latency_s": args.slm_latency, "llm_latency_s": args.llm_latency,
                       "server_capacity": args.capacity, "turns_per_episode": {"slm": ASKS + 1, "llm": ASKS}},
           "time_scale": args.time_scale, "settings": {}}
    slm_reply = busy(slm_script, args.slm_latency * args.time_scale, args.capacity)
    llm_reply = busy(llm_script, args.llm_latency * args.time_scale, args.capacity)
    with ScriptedServer(reply=slm_reply) as slm, ScriptedServer(reply=llm_reply) as llm:
        one_round(qs[:8], slm.base_url, llm.base_url, 8)  # warm-up: imports, first connections
        for c in args.concurrency:
            wall = one_round(qs, slm.base_url, llm.base_url, c)
            real = wall / args.time_scale
            out["settings"][str(c)] = {
                "wall_s_simulated": round(wall, 2),
                "episodes_per_s_at_assumed_latency": round(args.episodes / real, 2),
                "round_hours": round(real * args.round_episodes / args.episodes / 3600, 2)}
    # the floor: every wave of `capacity` episodes waits 3 SLM turns and 2 LLM replies back to back
    waves = -(-args.episodes // args.capacity)
    floor = waves * ((ASKS + 1) * args.slm_latency + ASKS * args.llm_latency)
    out["round_hours_at_full_capacity"] = round(floor * args.round_episodes / args.episodes / 3600, 2)
    first, last = (out["settings"][str(c)]["round_hours"] for c in (args.concurrency[0], args.concurrency[-1]))
    out["speedup_last_vs_first"] = round(first / last, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
