"""SIGKILL the data pipeline in the middle of its chunked LLM injection, rerun it against the same counting server:
the rerun calls the LLM only for the seeds the store lacks, nothing is lost and nothing is stored twice.

The scripted server gives one well-formed reply that every step accepts, so each seed costs exactly four calls
(three rewrite steps and the check) and every seed becomes one question: the arithmetic below is exact. A second
rerun makes no call at all (injection and judge verdicts all stored).
"""

import json
import os
import signal
import subprocess
import sys
import time

import duckdb

from seekhelp.backends.scripted_server import Faults, ScriptedServer
from tests.reliability.conftest import ROOT, child_env, generate_args, run_module

CALLS_PER_SEED = 4
CHUNK = 4
N_PER_SPLIT = "{train: 12, validation: 4, test: 4}"
REPLY = json.dumps({
    "privacy_items": ["The user's cousin Mira lives in the city in question.", "Mira moved there in 2019."],
    "restated": "The user's cousin Mira lives in that city.", "question": "Which city does Mira live in?",
    "reason": "Same answer, not written in the question.", "same_answer": True, "answer_in_question": False,
    "leaked_items": [], "leak": False})


def step(body: dict) -> str:
    return "judge" if "You audit what a small" in body["messages"][0]["content"] else "inject"


def argv(tmp, base_url: str) -> list[str]:
    return generate_args(tmp / "store.duckdb", tmp / "shards", f"seeds.n_per_split={N_PER_SPLIT}",
                         "injection.kind=llm", f"injection.chunk_size={CHUNK}", "judge.chunk_size=4",
                         f"endpoint.base_url={base_url}", "endpoint.model=scripted", "judge.limit=null")


def stored(store) -> dict:
    con = duckdb.connect(str(store), read_only=True)
    try:
        q = con.execute("SELECT count(*), count(DISTINCT json_extract_string(meta, '$.seed_id')) FROM questions")
        n_q, n_seeds = q.fetchone()
        n_fail = con.execute("SELECT count(*) FROM failures WHERE stage = 'injection'").fetchone()[0]
        n_verdicts, n_judged = con.execute("SELECT count(*), count(DISTINCT trajectory_id) FROM judgments "
                                           "WHERE judge = 'leak_judge'").fetchone()
        return {"questions": n_q, "seeds": n_seeds, "injection_failures": n_fail, "verdicts": n_verdicts,
                "judged": n_judged}
    finally:
        con.close()


def test_kill_mid_injection_then_rerun_repeats_no_stored_call(tmp_path):
    with ScriptedServer(lambda messages: REPLY, Faults(slow=1.0, slow_s=0.05)) as srv:
        log = tmp_path / "killed.log"
        with open(log, "w") as f:
            p = subprocess.Popen([sys.executable, "-m", "pipelines.generate", *argv(tmp_path, srv.base_url)],
                                 cwd=ROOT, env=child_env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                target = CALLS_PER_SEED * CHUNK * 2 + 3  # inside the third chunk
                deadline = time.monotonic() + 300
                while len(srv.requests) < target and p.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert p.poll() is None, "the run ended before the kill:\n" + log.read_text()[-3000:]
            finally:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        calls_killed = sum(step(b) == "inject" for b in srv.requests)
        after_kill = stored(tmp_path / "store.duckdb")
        assert after_kill["seeds"] >= CHUNK * 2 and after_kill["seeds"] % CHUNK == 0, after_kill  # whole chunks only
        assert after_kill["questions"] == after_kill["seeds"]

        srv.requests.clear()
        res = run_module("pipelines.generate", *argv(tmp_path, srv.base_url))
        assert res.returncode == 0, res.stderr[-3000:]
        n_seeds = json.loads(res.stdout.strip().splitlines()[-1])["rows"]["questions"]
        calls_rerun = sum(step(b) == "inject" for b in srv.requests)
        final = stored(tmp_path / "store.duckdb")
        assert calls_rerun == CALLS_PER_SEED * (n_seeds - after_kill["seeds"]), (calls_rerun, n_seeds, after_kill)
        assert final["questions"] == final["seeds"] == n_seeds == 20 and final["injection_failures"] == 0, final
        assert final["verdicts"] == final["judged"] > 0, final  # one verdict per judged dialogue

        srv.requests.clear()
        res = run_module("pipelines.generate", *argv(tmp_path, srv.base_url))
        assert res.returncode == 0, res.stderr[-3000:]
        assert srv.requests == [], f"a rerun with everything stored made {len(srv.requests)} calls"
        assert stored(tmp_path / "store.duckdb") == final
    print("resume:", json.dumps({"seeds": n_seeds, "calls_before_kill": calls_killed,
                                 "seeds_stored_at_kill": after_kill["seeds"],
                                 "calls_lost_with_the_chunk_in_flight": calls_killed
                                 - CALLS_PER_SEED * after_kill["seeds"], "calls_on_rerun": calls_rerun,
                                 "calls_not_yet_stored": CALLS_PER_SEED * (n_seeds - after_kill["seeds"]),
                                 "verdicts": final["verdicts"]}))
