"""Ingest time of the DuckDB store against DuckDB loading the same shards on its own, and the named queries' time.

    python -m benchmarks.store_ingest --turns 1000000 [--shard-trajectories 25000] [--no-direct] [--repeat-ingest 2]

Synthesizes `--turns` turns (about a quarter as many trajectories: half of them ask once and answer, half ask twice)
as real `Question` / `Trajectory` / `Turn` records, with the judgments a pipeline and an RL round store for each
trajectory (em, f1, leak_detector, leak_sent from `deterministic_judgments`; reward and its parts from
`reward_judgments`).
Each batch goes through `write_shard` (timed). Then, in the same run and on the same shard files, each into a fresh
store with the same schema: the baseline, one plain DuckDB `INSERT INTO t SELECT ... FROM read_parquet([...])` per
table over all the shards of its kind (no skipping of stored rows, no shard bookkeeping), and one
`Store.ingest_shards` call (timed; best of `--repeat-ingest`, the two alternating). Peak RSS is measured during
each (the kernel's high-water mark, reset before it). With the direct path on, the same batches also go through
`add_questions` / `add_trajectories` / `add_judgments` into a third store. Then data/queries/stats.sql,
sft_candidates.sql and rs_select.sql each run through `run_sql` (read-only, as `seekhelp sql` runs them; first run
and best of `--repeat`). Building the records is not timed.
Targets: ingest <= 2x the plain load; write + ingest of 1M turns <= 30 s; each query <= 1 s. Prints one JSON line.
"""

import argparse
import json
import platform
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from seekhelp.judging import deterministic_judgments, reward_judgments
from seekhelp.records import Question, Trajectory, Turn
from seekhelp.rewards import compute_reward
from seekhelp.store import Store, load_query, run_sql, write_shard
from seekhelp.store.ingest import list_shards, shard_info, shard_selects

PLACES = [("Peru", "Lima"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Norway", "Oslo"), ("Chile", "Santiago"),
          ("Egypt", "Cairo"), ("Nepal", "Kathmandu"), ("Spain", "Madrid"), ("Ghana", "Accra"), ("Laos", "Vientiane")]
KIN = ["sister", "cousin", "friend", "colleague", "neighbour", "uncle", "daughter"]
SPLITS = ["train"] * 8 + ["validation", "test"]
SAMPLES = 4  # trajectories per question (sample_index 0..3; the odd samples belong to RL round 2, the rest round 1)


def question(i: int) -> Question:
    country, city = PLACES[i % len(PLACES)]
    kin = KIN[i % len(KIN)]
    year = 2000 + i % 25  # items repeat every 350 questions: the leak detector compiles ~2 regexes per new item
    return Question(question=f"My {kin} (no. {i}) moved to {country} in {year} and I will fly to its capital "
                             "next month. Which city should I book?",
                    answers=[city], privacy_items=[f"The user's {kin} moved to {country} in {year}.",
                                                   f"The user will fly to the capital of {country} next month."],
                    original_question=f"What is the capital of {country}?", source="synthetic",
                    split=SPLITS[i % len(SPLITS)], meta={"hops": 1, "entities": [country]})


def trajectory(q: Question, k: int, rng: random.Random) -> Trajectory:
    country = q.meta["entities"][0]
    city = q.answers[0] if rng.random() < 0.65 else rng.choice(PLACES)[1]
    asks = 1 + (k + len(q.question)) % 2
    turns = []
    for a in range(asks):
        msg = f"What is the capital city of {country}?" if a == 0 else f"Is {city} the seat of government there?"
        turns.append(Turn("slm", f"<think>I need a general fact.</think>\n<message>{msg}</message>", "message", msg,
                          "I need a general fact.", prompt_tokens=310 + 60 * a, completion_tokens=24, latency_s=0.41))
        info = f"The capital of {country} is {q.answers[0]}; it is also its largest city."
        turns.append(Turn("llm", f"{country} is a country.\n\n<information>{info}</information>", "information", info,
                          f"{country} is a country.", prompt_tokens=120 + 40 * a, completion_tokens=31,
                          latency_s=0.9, sent=msg))
    turns.append(Turn("slm", f"<think>The expert says {city}.</think>\n<answer>{city}</answer>", "answer", city,
                      f"The expert says {city}.", prompt_tokens=400 + 60 * asks, completion_tokens=17, latency_s=0.3))
    return Trajectory(q.id, "dynamic", "smollm2-135m-sft", "scripted-llm", turns, final_answer=city,
                      stop_reason="answer", sample_index=k, config_hash="bench0001", round=1 + k % 2)


def judgments(q: Question, t: Trajectory, rng: random.Random) -> list[dict]:
    rows = deterministic_judgments(q, t)
    leaked = rows[2]["value"] > 0
    return rows + reward_judgments(t.id, compute_reward(t, q.answers, leaked, is_easy=rng.random() < 0.25))


def batches(n_questions: int, per_batch: int, seed: int):
    """(questions, trajectories, judgment rows) in batches of about `per_batch` trajectories."""
    rng = random.Random(seed)
    step = max(1, per_batch // SAMPLES)
    for lo in range(0, n_questions, step):
        qs = [question(i) for i in range(lo, min(n_questions, lo + step))]
        trajs, rows = [], []
        for q in qs:
            for k in range(SAMPLES):
                t = trajectory(q, k, rng)
                trajs.append(t)
                rows += judgments(q, t, rng)
        yield qs, trajs, rows


def timed_queries(path: Path, repeat: int) -> dict:
    calls = {"stats": {}, "sft_candidates": {"split": "train", "strategy": "*"},
             "rs_select": {"round": 2, "min_reward": 0.5, "split": "train"}}
    out = {}
    for name, params in calls.items():
        sql, times = load_query(name), []
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            df = run_sql(path, sql, params)
            times.append(time.perf_counter() - t0)
        out |= {f"{name}_s": round(min(times), 3), f"{name}_first_s": round(times[0], 3), f"{name}_rows": df.height}
    return out


def store_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20, 1)


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark of this process (Linux); elsewhere the peak stays the process's own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def plain_load(shards: Path, path: Path) -> None:
    """The baseline: DuckDB on its own, one INSERT ... SELECT FROM read_parquet([...]) per table, same schema."""
    Store(path).close()
    by_kind: dict[str, list[Path]] = {}
    for p in list_shards(shards):
        by_kind.setdefault(shard_info(p)[0], []).append(p)
    con = duckdb.connect(str(path))
    try:
        for kind, files in by_kind.items():
            for table, select in shard_selects(files, kind).items():
                con.execute(f"INSERT INTO {table} BY NAME {select}")
    finally:
        con.close()


def timed_ingests(shards: Path, tmp: Path, repeat: int) -> tuple[dict, dict]:
    """Best times (and peak RSS) of the plain load and of `ingest_shards`, alternating, each into a fresh store."""
    best = {"plain": float("inf"), "ours": float("inf")}
    rss = {"plain": 0.0, "ours": 0.0}
    counts = {}
    for i in range(max(1, repeat)):
        for name in ("plain", "ours"):
            path = tmp / f"{name}-{i}.duckdb"
            reset_peak_rss()
            t0 = time.perf_counter()
            if name == "plain":
                plain_load(shards, path)
            else:
                with Store(path) as store:
                    counts = store.ingest_shards(shards)
            best[name] = min(best[name], time.perf_counter() - t0)
            rss[name] = max(rss[name], peak_rss_mb())
            if i + 1 < max(1, repeat):
                for p in tmp.glob(path.name + "*"):
                    p.unlink()
    return {"plain_load_s": round(best["plain"], 2), "ingest_shards_s": round(best["ours"], 2),
            "ingest_vs_plain": round(best["ours"] / best["plain"], 2), "plain_peak_rss_mb": rss["plain"],
            "ingest_peak_rss_mb": rss["ours"]}, counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Store ingest and query timings on synthetic trajectories.")
    ap.add_argument("--turns", type=int, default=1_000_000)
    ap.add_argument("--shard-trajectories", type=int, default=25_000, help="trajectories per shard / write batch")
    ap.add_argument("--no-direct", action="store_true", help="skip the add_trajectories comparison")
    ap.add_argument("--repeat", type=int, default=3, help="runs per query (best and first reported)")
    ap.add_argument("--repeat-ingest", type=int, default=2, help="runs of the plain load and of ingest_shards")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n_questions = max(1, round(args.turns / 4 / SAMPLES))
    n_traj = n_turns = n_judg = 0
    t_shards = t_direct = 0.0
    reset_peak_rss()
    with tempfile.TemporaryDirectory(prefix="seekhelp-bench-") as tmp:
        shards, direct_path = Path(tmp, "shards"), Path(tmp, "direct.duckdb")
        t_start = time.perf_counter()
        direct = None if args.no_direct else Store(direct_path)
        for qs, trajs, rows in batches(n_questions, args.shard_trajectories, args.seed):
            n_traj, n_judg = n_traj + len(trajs), n_judg + len(rows)
            n_turns += sum(len(t.turns) for t in trajs)
            t0 = time.perf_counter()
            write_shard(shards, "questions", qs, "bench-run")
            write_shard(shards, "trajectories", trajs, "bench-run")
            write_shard(shards, "judgments", rows, "bench-run")
            t_shards += time.perf_counter() - t0
            if direct is not None:
                t0 = time.perf_counter()
                direct.add_questions(qs, "bench-run")
                direct.add_trajectories(trajs, "bench-run")
                direct.add_judgments(rows, "bench-run")
                t_direct += time.perf_counter() - t0
        if direct is not None:
            direct.close()
            for p in Path(tmp).glob(direct_path.name + "*"):
                p.unlink()
        t_build = time.perf_counter() - t_start
        build_rss = peak_rss_mb()
        ingests, counts = timed_ingests(shards, Path(tmp), args.repeat_ingest)
        main_path = sorted(Path(tmp).glob("ours-*.duckdb"))[-1]
        queries = timed_queries(main_path, args.repeat)
        size = store_mb(main_path)
        shards_mb = round(sum(p.stat().st_size for p in shards.iterdir()) / 2**20, 1)
        shutil.rmtree(shards)
    t_ingest = ingests["ingest_shards_s"]
    out = {"figure": "store_ingest", "machine": platform.processor() or platform.machine(), "turns": n_turns,
           "trajectories": n_traj, "questions": n_questions, "judgments": n_judg, "shards": counts["shards"],
           "shards_mb": shards_mb, "write_shards_s": round(t_shards, 2), **ingests,
           "shards_total_s": round(t_shards + t_ingest, 2), "build_and_write_s": round(t_build, 1),
           "build_peak_rss_mb": build_rss,
           "add_trajectories_s": None if args.no_direct else round(t_direct, 2),
           "turns_per_s": round(n_turns / (t_shards + t_ingest)), **queries, "store_mb": size,
           "ingest_vs_plain_met": ingests["ingest_vs_plain"] <= 2, "ingest_target_met": t_shards + t_ingest <= 30,
           "queries_target_met": all(queries[f"{q}_s"] <= 1 for q in ("stats", "sft_candidates", "rs_select"))}
    if not args.no_direct:
        out["direct_vs_shards"] = round(t_direct / (t_shards + t_ingest), 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
