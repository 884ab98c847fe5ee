"""SQL while a stage writes: `seekhelp stats` and `seekhelp sql` answer every time while another process writes
the store as fast as it can, in many short transactions (direct writes as an RL round or the eval makes them, and
shard ingests as the data pipeline makes them), for about 20 s, one query every ~2 s.

The writer never sleeps between transactions, the worst case for a reader that polls for the file lock: the
readers' markers (seekhelp.store.connection) must still let every query in well within its bound.
"""

import json
import subprocess
import sys
import time

from tests.reliability.conftest import ROOT, child_env, run_module

WRITER = """
import sys, time
from seekhelp.records import Question, Trajectory, Turn
from seekhelp.store import Store, write_shard

store_path, shard_dir, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = Store(store_path)
print("ready", flush=True)
t_end, i, n = time.monotonic() + seconds, 0, 0
while time.monotonic() < t_end:
    qs = [Question(f"Question {i}-{k}: what is the capital of country {k}?", [f"City{k}"]) for k in range(200)]
    ts = [Trajectory(q.id, "dynamic", "slm", "llm", [Turn("slm", "<answer>x</answer>", "answer", "x")],
                     final_answer="x", sample_index=i) for q in qs]
    rows = [{"trajectory_id": t.id, "judge": "em", "value": 0.0} for t in ts]
    if i % 2:
        with store.transaction():
            store.add_questions(qs)
            store.add_trajectories(ts)
            store.add_judgments(rows)
    else:
        write_shard(shard_dir, "questions", qs)
        write_shard(shard_dir, "trajectories", ts)
        write_shard(shard_dir, "judgments", rows)
        store.ingest_shards(shard_dir)
    i, n = i + 1, n + len(ts)
print(f"{i} {n}", flush=True)
"""


def test_stats_and_sql_answer_while_a_writer_runs(tmp_path):
    store, shards = tmp_path / "store.duckdb", tmp_path / "shards"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(store), str(shards), "20"], cwd=ROOT,
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    queries = []  # (writer still running, "stats" | "sql", result)
    try:
        assert writer.stdout.readline().strip() == "ready"
        while writer.poll() is None:
            t0 = time.perf_counter()
            if len(queries) % 2 == 0:
                res = run_module("seekhelp.cli", "stats", "--store", str(store), timeout=120)
            else:
                res = run_module("seekhelp.cli", "sql", "SELECT count(*) AS n FROM trajectories", "--store",
                                 str(store), "--format", "json", timeout=120)
            queries.append((writer.poll() is None, "sql" if len(queries) % 2 else "stats", res))
            time.sleep(max(0.0, 2.0 - (time.perf_counter() - t0)))
        out, err = writer.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, err[-2000:]
    transactions, written = map(int, out.split())
    during = [q for q in queries if q[0]]
    assert len(during) >= 4, f"only {len(during)} queries ran while the writer wrote"
    counts = []
    for _, kind, res in queries:
        assert res.returncode == 0, f"{kind}: {res.stderr[-1000:]}"
        if kind == "stats":
            assert "rows per table" in res.stdout
        else:
            counts.append(json.loads(res.stdout)[0]["n"])
    assert counts == sorted(counts) and counts[-1] <= written  # committed states only, growing
    assert 0 < counts[-1] and transactions > 10
    print(f"writer: {transactions} transactions, {written} trajectories; {len(during)} queries during it, each "
          f"answered, slowest {max(q[2].wall_s for q in queries):.1f} s")
    final = run_module("seekhelp.cli", "sql", "SELECT count(*) AS n FROM trajectories", "--store", str(store),
                       "--format", "json", timeout=120)
    assert json.loads(final.stdout)[0]["n"] == written
