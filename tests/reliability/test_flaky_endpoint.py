"""The data pipeline's LLM judge against a flaky endpoint (real HTTP on 127.0.0.1): 30% 429, 10% 500, 10% replies
slower than the client's timeout, 5% malformed bodies. The run completes; every dialogue is either judged or
recorded in `failures` with its reason; a rerun against a healthy endpoint judges exactly the failed ones.
"""

import json

import duckdb
import pytest

from seekhelp.backends.scripted_server import Faults, ScriptedServer
from tests.reliability.conftest import generate_args, run_module

VERDICT = json.dumps({"reason": "the messages are objective requests", "leaked_items": [], "leak": False})
FAULTS = dict(rate_limit=0.30, server_error=0.10, slow=0.10, malformed=0.05, slow_s=2.0)
CLIENT = ["judge.timeout_s=1", "judge.max_retries=3"]  # the client gives up on a slow reply after 1 s


def _reply(messages):
    return VERDICT


def judge_items(store) -> dict[str, bool]:
    """Trajectories the LLM judge must cover (they sent something) -> whether a call is needed (privacy items)."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        rows = con.execute("""
            SELECT t.id, len(any_value(q.privacy_items)) > 0
            FROM trajectories t JOIN turns u ON u.trajectory_id = t.id AND u.role = 'llm' AND u.sent IS NOT NULL
            JOIN questions q ON q.id = t.question_id GROUP BY t.id""").fetchall()
        return dict(rows)
    finally:
        con.close()


def judged(store) -> dict[str, tuple]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return {r[0]: r[1:] for r in con.execute(
            "SELECT trajectory_id, value, label, run_id, created_at FROM judgments WHERE judge = 'leak_judge'"
        ).fetchall()}
    finally:
        con.close()


def judge_failures(store) -> dict[str, str]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return dict(con.execute("SELECT item_id, any_value(reason) FROM failures WHERE stage = 'llm_judge' "
                                "GROUP BY item_id").fetchall())
    finally:
        con.close()


def flaky_then_healthy(tmp_path, seeds: str | None, fault_seed: int) -> dict:
    store, shards = tmp_path / "store.duckdb", tmp_path / "shards"
    sets = ["judge.llm_judge=true", "judge.limit=null", "endpoint.model=scripted", *CLIENT]
    if seeds:
        sets.append(f"seeds.n_per_split={seeds}")

    with ScriptedServer(_reply, Faults(**FAULTS, seed=fault_seed)) as flaky:
        first = run_module("pipelines.generate", *generate_args(store, shards, *sets,
                                                                 f"endpoint.base_url={flaky.base_url}"))
    assert first.returncode == 0, first.stderr[-3000:]
    items, verdicts, failed = judge_items(store), judged(store), judge_failures(store)
    n_calls = sum(items.values())
    faults = {k: v for k, v in flaky.counts.items() if k != "ok"}
    assert sum(faults.values()) > 0, flaky.counts
    # nothing silently dropped: every dialogue is judged or failed, never both, never neither
    assert set(verdicts) | set(failed) == set(items)
    assert not set(verdicts) & set(failed)
    assert len(verdicts) + len(failed) == len(items)
    assert all(v[0] in (0.0, 1.0) and v[1] in ("leak", "clean") for v in verdicts.values())
    assert failed and all(reason for reason in failed.values()), "the faults should fail some dialogues"

    with ScriptedServer(_reply) as healthy:
        second = run_module("pipelines.generate", *generate_args(store, shards, *sets,
                                                                  f"endpoint.base_url={healthy.base_url}"))
    assert second.returncode == 0, second.stderr[-3000:]
    after = judged(store)
    # exactly the failed dialogues were judged again (one call each), the others kept their first verdict
    assert len(healthy.requests) == len(failed)
    assert set(after) == set(items)
    assert {k: v for k, v in after.items() if k not in failed} == verdicts
    rerun_ids = {v[2] for k, v in after.items() if k in failed}
    assert len(rerun_ids) == 1 and rerun_ids.isdisjoint({v[2] for v in verdicts.values()})
    report = {"dialogues": len(items), "llm_calls_needed": n_calls, "requests": len(flaky.requests),
              "retries": len(flaky.requests) - n_calls, "faults": flaky.counts, "judged": len(verdicts),
              "failures_recorded": len(failed), "reasons": sorted(set(failed.values())),
              "rerun_requests": len(healthy.requests), "judged_after_rerun": len(after),
              "first_run_s": round(first.wall_s, 1), "rerun_s": round(second.wall_s, 1)}
    print("flaky:", json.dumps(report))
    return report


def test_flaky_judge_endpoint_small(tmp_path):
    flaky_then_healthy(tmp_path, "{train: 16, validation: 0, test: 0}", fault_seed=1)


@pytest.mark.slow
def test_flaky_judge_endpoint_full_demo(tmp_path):
    flaky_then_healthy(tmp_path, None, fault_seed=2)
