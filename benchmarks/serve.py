"""Throughput and latency of `seekhelp serve`: 32 concurrent clients vs one client at a time, on the embedded SLM.

    python -m benchmarks.serve [--slm smollm2-135m|MODEL_DIR] [--requests 96] [--sequential 16] [--clients 32]

The server is the real app (`seekhelp.serve.create_app` under uvicorn on 127.0.0.1) over the local SLM, in front of
an instant local OpenAI-compatible upstream (`ScriptedServer`), so what is measured is the SLM side and our own
code: HTTP, parsing, the batching engine, the episode loop, the guard, the audit trail. Clients are the official
`openai` async client, `dynamic` strategy, greedy decoding, each request with one privacy label.

1. one at a time: one client sends `--sequential` requests, each after the previous answer;
2. concurrent: `--clients` clients send `--requests` requests in all, each client its next one as soon as it has
   its answer (closed loop), so the engine batches whatever is pending.
The two phases alternate over `--rounds` rounds (each round a share of both), so that load from other processes on
a shared machine hits both alike; CPU seconds of this process per request are reported beside the wall-clock
figures for the same reason. Both phases cycle over the same `--sequential` questions (the same mix of work).
speedup = requests/s concurrent ÷ requests/s one at a time (target >= 5x at 32 clients); p50/p95 are per-request
latencies seen by the client. One warm-up request first. Prints one JSON line.
"""

import argparse
import asyncio
import json
import platform
import statistics
import time

import openai

from seekhelp.backends.local import TransformersBackend
from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
from seekhelp.backends.scripted_server import ScriptedServer
from seekhelp.runtime import RuntimeConfig
from seekhelp.serve import ServeSettings, create_app, serving
from seekhelp.strategies import StrategyContext

TARGET = 5.0
PLACES = [("Peru", "Lima"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Norway", "Oslo"), ("Chile", "Santiago"),
          ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("India", "New Delhi")]


def request(i: int) -> dict:
    country = PLACES[i % len(PLACES)][0]
    return {"model": "seekhelp/dynamic",
            "messages": [{"role": "user", "content": f"My cousin no. {i} lives in {country} and I will visit her in "
                                                     "its capital. Which city is that?"}],
            "extra_body": {"seekhelp": {"privacy_items": [f"The user's cousin no. {i} lives in {country}."]}}}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


class Phase:
    """Requests of one mode, accumulated over rounds."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.batch_sizes: list[int] = []
        self.stops: dict[str, int] = {}
        self.wall_s = self.cpu_s = 0.0

    async def run(self, root: str, n: int, clients: int, cycle: int, start: int = 0) -> None:
        next_i = iter(range(start, start + n))

        async def client_loop(c: openai.AsyncOpenAI) -> None:
            for i in next_i:
                t0 = time.perf_counter()
                resp = await c.chat.completions.create(**request(i % cycle))
                self.latencies.append(time.perf_counter() - t0)
                audit = resp.model_extra["seekhelp"]
                self.stops[audit["stop_reason"]] = self.stops.get(audit["stop_reason"], 0) + 1
                self.batch_sizes.append(audit["batch_size"])

        async with openai.AsyncOpenAI(base_url=root + "/v1", api_key="-", max_retries=0, timeout=1800) as c:
            t0, c0 = time.perf_counter(), time.process_time()
            await asyncio.gather(*(client_loop(c) for _ in range(clients)))
            self.wall_s += time.perf_counter() - t0
            self.cpu_s += time.process_time() - c0

    def summary(self, clients: int) -> dict:
        n, b = len(self.latencies), self.batch_sizes
        return {"requests": n, "clients": clients, "wall_s": round(self.wall_s, 2),
                "requests_per_s": round(n / self.wall_s, 3), "cpu_s_per_request": round(self.cpu_s / n, 3),
                "p50_s": round(statistics.median(self.latencies), 3), "p95_s": round(_pct(self.latencies, 0.95), 3),
                "mean_batch": round(statistics.mean(b), 2), "stop_reasons": self.stops,
                "batch_sizes": {str(k): b.count(k) // k for k in sorted(set(b))}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Throughput of seekhelp serve: concurrent clients vs one at a time.")
    ap.add_argument("--slm", default="smollm2-135m", help="registry name or model folder")
    ap.add_argument("--requests", type=int, default=128, help="requests in the concurrent phase")
    ap.add_argument("--sequential", type=int, default=16, help="requests in the one-at-a-time phase")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=160, help="SLM tokens per turn (the runtime's default)")
    ap.add_argument("--batch-window-ms", type=float, default=20.0, help="the server's default")
    ap.add_argument("--rounds", type=int, default=2, help="the phases alternate this many times")
    args = ap.parse_args(argv)

    slm = TransformersBackend(args.slm, max_batch_size=args.clients)
    with ScriptedServer() as upstream:
        llm = OpenAIBackend(EndpointConfig(base_url=upstream.base_url, model="scripted", max_concurrency=64))
        ctx = StrategyContext(slm=slm, llm=llm, config=RuntimeConfig(slm_max_new_tokens=args.max_new_tokens))
        app = create_app(ctx, ServeSettings(max_batch=args.clients, batch_window_ms=args.batch_window_ms))
        with serving(app) as root:
            asyncio.run(Phase().run(root, 1, 1, 1))  # warm-up: first generate, prefix cache
            seq, conc = Phase(), Phase()
            for r in range(args.rounds):
                k = args.sequential // args.rounds + (r < args.sequential % args.rounds)
                asyncio.run(seq.run(root, k, 1, args.sequential, start=len(seq.latencies)))
                m = args.requests // args.rounds + (r < args.requests % args.rounds)
                asyncio.run(conc.run(root, m, args.clients, args.sequential, start=len(conc.latencies)))
        upstream_calls = len(upstream.requests)
    seq_out, conc_out = seq.summary(1), conc.summary(args.clients)
    speedup = conc_out["requests_per_s"] / seq_out["requests_per_s"]
    out = {"figure": "serve", "machine": platform.processor() or platform.machine(), "slm": args.slm,
           "rounds": args.rounds, "batch_window_ms": args.batch_window_ms, "one_at_a_time": seq_out,
           "concurrent": conc_out, "speedup": round(speedup, 2),
           "cpu_speedup": round(seq_out["cpu_s_per_request"] / conc_out["cpu_s_per_request"], 2),
           "target_met": speedup >= TARGET if args.clients >= 32 else None, "upstream_calls": upstream_calls,
           "slm_generate_calls": slm.stats["batches"], "slm_episode_turns": slm.stats["calls"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
