"""SIGKILL the data pipeline at random points; the store stays readable and a rerun ends where an uninterrupted run
ends: no duplicate row, the same rows in every data table.

`runs` holds one row either way (the run id is a hash of the recipe, so the rerun reuses it). `ingested_shards` may
hold MORE rows after a crash: shards the killed run wrote but had not ingested are ingested by the rerun next to
the rerun's own shards for the same items (rows dedupe on their content-hash keys; the shard bookkeeping does not).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from tests.reliability.conftest import DATA_TABLES, ROOT, child_env, generate_args, run_module

SEED = 20261123
KEYS = {  # primary key (or identity) of each data table, as one SQL expression
    "questions": "id",
    "trajectories": "id",
    "turns": "trajectory_id || ':' || idx",
    "judgments": "trajectory_id || ':' || judge || ':' || coalesce(CAST(value AS VARCHAR), 'null')",
    "easy": "question_id || ':' || slm",
    "failures": "coalesce(item_id, '') || ':' || stage || ':' || coalesce(reason, '')",
}


def snapshot(store) -> dict:
    """Row counts, duplicate counts and a digest of the keys of every table, read through a read-only connection."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        out = {"counts": {}, "dups": {}, "digest": {}}
        for t in (*DATA_TABLES, "runs", "ingested_shards"):
            out["counts"][t] = con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t, key in KEYS.items():
            n, distinct, digest = con.execute(
                f"SELECT count(*), count(DISTINCT {key}), md5(coalesce(string_agg({key}, ',' ORDER BY {key}), '')) "
                f"FROM {t}").fetchone()
            out["dups"][t], out["digest"][t] = n - distinct, digest
        out["run_status"] = [r[0] for r in con.execute("SELECT status FROM runs").fetchall()]
        return out
    finally:
        con.close()


def _argv(tmp):
    return generate_args(tmp / "store.duckdb", tmp / "shards", "judge.llm_judge=false")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its wall time and its store."""
    tmp = tmp_path_factory.mktemp("reference")
    res = run_module("pipelines.generate", *_argv(tmp))
    assert res.returncode == 0, res.stderr[-3000:]
    snap = snapshot(tmp / "store.duckdb")
    assert snap["counts"]["questions"] > 0 and snap["counts"]["trajectories"] > 0
    return {"wall_s": res.wall_s, "snap": snap}


def kill_at(tmp, delay: float) -> dict:
    """Start the data run, SIGKILL its whole process group (distilabel's workers too) after `delay` seconds."""
    log = tmp / "killed.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen([sys.executable, "-m", "pipelines.generate", *_argv(tmp)], cwd=ROOT, env=child_env(),
                             stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            p.wait(timeout=delay)
            killed = False
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            killed = True
    lines = [x for x in log.read_text(errors="replace").splitlines() if " INFO " in x]
    return {"delay_s": round(delay, 2), "killed": killed, "elapsed_s": time.perf_counter() - t0,
            "last_log": lines[-1].split(": ", 1)[-1] if lines else ""}


def crash_and_resume(tmp, fraction: float, reference: dict) -> dict:
    """Kill a run at `fraction` of its run time, check the store, rerun, compare with the uninterrupted run.

    The machine's speed varies, so a run that finishes before the kill is repeated in a fresh folder with the
    delay scaled to the run time just seen."""
    expected = reference["wall_s"]
    for attempt in range(3):
        tmp_k = tmp / f"attempt-{attempt}"
        tmp_k.mkdir(parents=True)
        info = kill_at(tmp_k, fraction * expected)
        if info["killed"]:
            break
        expected = info["elapsed_s"]
    assert info["killed"], f"the run always finished before the kill: {info}"
    tmp = tmp_k
    store = tmp / "store.duckdb"
    info["store_existed"] = store.exists()
    info["wal_left"] = store.with_name(store.name + ".wal").exists()
    if store.exists():  # readable, read-only, right after the kill (DuckDB replays its WAL)
        info["after_kill"] = snapshot(store)["counts"]
    t0 = time.perf_counter()
    res = run_module("pipelines.generate", *_argv(tmp))
    info["elapsed_s"] = round(info["elapsed_s"], 1)
    info["rerun_s"] = round(time.perf_counter() - t0, 1)
    assert res.returncode == 0, f"rerun after a kill at {info['delay_s']}s failed: {res.stderr[-3000:]}"
    snap, ref = snapshot(store), reference["snap"]
    assert all(v == 0 for v in snap["dups"].values()), snap["dups"]
    for t in DATA_TABLES:
        assert snap["counts"][t] == ref["counts"][t], (t, snap["counts"], ref["counts"], info)
        assert snap["digest"][t] == ref["digest"][t], (t, "rows differ from the uninterrupted run", info)
    assert snap["counts"]["runs"] == ref["counts"]["runs"] == 1 and snap["run_status"] == ["ok"]
    assert snap["counts"]["ingested_shards"] >= ref["counts"]["ingested_shards"]
    info["ingested_shards"] = (snap["counts"]["ingested_shards"], ref["counts"]["ingested_shards"])
    print("crash:", json.dumps(info))
    return info


def test_one_kill_then_rerun_matches_an_uninterrupted_run(reference, tmp_path):
    crash_and_resume(tmp_path, random.Random(SEED).uniform(0.3, 0.8), reference)


@pytest.mark.slow
def test_five_random_kills_each_resume_cleanly(reference, tmp_path):
    rng = random.Random(SEED + 1)
    fractions = [(k + rng.random()) / 5 for k in range(5)]  # one random point in each fifth of the run
    infos = [crash_and_resume(tmp_path / f"kill-{k}", f, reference) for k, f in enumerate(fractions)]
    assert len(infos) == 5 and all(i["killed"] for i in infos)
    print("reference:", json.dumps(reference["snap"]["counts"]), f"wall {reference['wall_s']:.1f}s")


def test_shards_are_written_judgments_first(tmp_path, monkeypatch):
    """The kill window the random kills can miss: a batch's trajectories shard written, its judgments shard not.
    A rerun skips questions whose trajectories are stored, so the judgments must be on disk first."""
    import seekhelp.store.ingest as ingest
    from pipelines.offline_inject import inject
    from pipelines.offline_teacher import teach
    from pipelines.seeds import offline_seeds
    from pipelines.steps import WriteShards
    from seekhelp.judging import deterministic_judgments

    q = inject(offline_seeds({"train": 4, "validation": 0, "test": 0})).questions[0]
    trajs = teach([q], n=1, seed=0)
    rows = [{"question_json": json.dumps(q.to_dict()), "trajectories_json": json.dumps([t.to_dict() for t in trajs]),
             "judgments_json": json.dumps([j for t in trajs for j in deterministic_judgments(q, t)]),
             "teacher_error": None}]
    order: list[str] = []
    real = ingest.write_shard
    monkeypatch.setattr(ingest, "write_shard", lambda d, kind, recs, run_id=None: order.append(kind) or
                        real(d, kind, recs, run_id))
    list(WriteShards(shard_dir=str(tmp_path), run_id="r").process(rows))
    assert order == ["judgments", "trajectories"]
