"""The DuckDB store: schema, idempotent ingest, shards, the scored view, the stored queries, read-only SQL, export."""

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from seekhelp.records import Question, Trajectory, Turn
from seekhelp.store import SCHEMA_VERSION, Store, StoreError, load_query, run_sql, write_shard
from seekhelp.store.ingest import list_shards

SLM_MSG = "<think>I need the capital.</think>\n<message>What is the capital of France?</message>"
SLM_ANS = "<think>Got it.</think>\n<answer>{}</answer>"


def question(i: int = 0, split: str = "train", private: bool = True) -> Question:
    return Question(question=f"The user's cousin lives in country {i}. What is its capital?", answers=[f"City{i}"],
                    privacy_items=[f"the user's cousin lives in country {i}"] if private else [],
                    original_question=f"What is the capital of country {i}?", source="geo", split=split)


def traj(q: Question, n_llm: int = 1, answer: str | None = None, sample: int = 0, tokens: int = 10,
         round: int = 0, strategy: str = "dynamic", stop: str = "answer", format_ok: bool = True) -> Trajectory:
    answer = q.answers[0] if answer is None else answer
    turns = []
    for k in range(n_llm):
        turns.append(Turn("slm", SLM_MSG, "message", "What is the capital of France?", "I need the capital.",
                          prompt_tokens=tokens, completion_tokens=tokens))
        turns.append(Turn("llm", f"Thinking.\n\n<information>fact {k}</information>", "information", f"fact {k}",
                          sent="What is the capital of France?", prompt_tokens=tokens, completion_tokens=tokens))
    turns.append(Turn("slm", SLM_ANS.format(answer), "answer", answer, "Got it.", prompt_tokens=tokens,
                      completion_tokens=tokens))
    return Trajectory(q.id, strategy, "slm-x", "llm-y", turns, final_answer=answer, stop_reason=stop,
                      format_ok=format_ok, sample_index=sample, round=round)


def judge(t: Trajectory, em: float, leak: float | None = 0.0, reward: float | None = None) -> list[dict]:
    rows = [{"trajectory_id": t.id, "judge": "em", "value": em}]
    if leak is not None:
        rows.append({"trajectory_id": t.id, "judge": "leak_judge", "value": leak, "details": {"reason": "test"}})
    if reward is not None:
        rows.append({"trajectory_id": t.id, "judge": "reward", "value": reward})
    return rows


@pytest.fixture
def db(tmp_path):
    return tmp_path / "store.duckdb"


def test_schema_created_with_version(db):
    with Store(db) as s:
        assert s.counts() == {t: 0 for t in ("runs", "questions", "trajectories", "turns", "judgments", "easy",
                                             "failures", "ingested_shards")}
    meta = run_sql(db, "SELECT value FROM meta WHERE key = 'schema_version'")
    assert meta["value"].to_list() == [str(SCHEMA_VERSION)]
    with Store(db):  # reopening an existing store is fine
        pass


def test_newer_schema_version_is_refused(db):
    with Store(db) as s:
        s.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    with pytest.raises(StoreError, match=rf"store schema version {SCHEMA_VERSION + 1} is newer .*upgrade seekhelp"):
        Store(db)
    with pytest.raises(StoreError, match="newer"):
        run_sql(db, "SELECT 1")


def test_ingest_is_idempotent(db):
    qs = [question(i) for i in range(3)]
    ts = [traj(q, n_llm=i) for i, q in enumerate(qs)]
    with Store(db) as s:
        run = s.start_run("generate", {"n": 3}, models={"slm": "slm-x"})
        assert s.add_questions(qs, run) == 3
        assert s.add_trajectories(ts, run) == 3
        s.add_judgments([r for t in ts for r in judge(t, 1.0)], run)
        s.add_easy([{"question_id": qs[0].id, "slm": "slm-x", "k": 4, "n_correct": 3, "is_easy": True}])
        s.add_failures([{"item_id": "seed-9", "stage": "inject", "reason": "answer changed"}], run)
        first = s.counts()
        assert s.add_questions(qs, run) == 0
        assert s.add_trajectories(ts + ts, run) == 0
        s.add_judgments([r for t in ts for r in judge(t, 1.0)], run)
        s.add_easy([{"question_id": qs[0].id, "slm": "slm-x", "k": 4, "n_correct": 3, "is_easy": True}])
        s.add_failures([{"item_id": "seed-9", "stage": "inject", "reason": "answer changed"}], run)
        assert s.counts() == first
        s.finish_run(run, "ok")
        assert s.stored_ids("trajectories", [ts[0].id, "nope"]) == {ts[0].id}
    assert first["turns"] == 1 + 3 + 5 and first["judgments"] == 6 and first["failures"] == 1
    runs = run_sql(db, "SELECT status, finished_at IS NOT NULL AS done, config ->> 'n' AS n FROM runs")
    assert runs.row(0) == ("ok", True, "3")


def test_judgments_are_replaced(db):
    q = question()
    t = traj(q)
    with Store(db) as s:
        s.add_trajectories([t])
        s.add_judgments([{"trajectory_id": t.id, "judge": "em", "value": 0.0}])
        s.add_judgments([{"trajectory_id": t.id, "judge": "em", "value": 1.0, "label": "correct"}])
    assert run_sql(db, "SELECT value, label FROM judgments").rows() == [(1.0, "correct")]


def test_transactions_nest_and_roll_back(db, tmp_path):
    q, t = question(), traj(question())
    with Store(db) as s:
        with pytest.raises(RuntimeError), s.transaction():
            s.add_questions([q])
            s.add_trajectories([t])
            raise RuntimeError("crash between writes")
        assert s.counts()["questions"] == s.counts()["trajectories"] == 0
        with s.transaction():
            s.add_questions([q])
            s.add_trajectories([t, t])  # repeats inside one batch are fine too
            s.add_judgments([{"trajectory_id": t.id, "judge": "em", "value": 0},
                             {"trajectory_id": t.id, "judge": "em", "value": True}])  # the last verdict wins
        assert s.counts()["turns"] == len(t.turns)
    assert run_sql(db, "SELECT value FROM judgments")["value"].to_list() == [1.0]
    path = write_shard(tmp_path / "shards", "trajectories", [t, t])
    with Store(db) as s:
        assert s.ingest_shards(path.parent) == {"shards": 1, "trajectories": 0, "turns": 0}


def test_shards_are_ingested_once(db, tmp_path):
    shard_dir = tmp_path / "shards"
    qs = [question(i) for i in range(4)]
    ts = [traj(q, n_llm=i % 3, sample=i) for i, q in enumerate(qs)]
    write_shard(shard_dir, "questions", qs, run_id="gen-1")
    path = write_shard(shard_dir, "trajectories", ts, run_id="gen-1")
    write_shard(shard_dir, "judgments", [r for t in ts for r in judge(t, 1.0)], run_id="judge-1")
    write_shard(shard_dir, "failures", [{"item_id": "x", "stage": "teacher", "reason": "timeout"}])
    assert not [p for p in shard_dir.iterdir() if p.name.startswith(".")]  # no temporary files left behind
    assert list_shards(shard_dir)[0].name.startswith("questions-")
    with Store(db) as s:
        counts = s.ingest_shards(shard_dir)
        assert counts["shards"] == 4 and counts["trajectories"] == 4
        assert counts["turns"] == sum(len(t.turns) for t in ts)
        assert s.ingest_shards(shard_dir) == {"shards": 0}
        write_shard(shard_dir, "trajectories", [traj(question(9))])
        assert s.ingest_shards(shard_dir)["shards"] == 1
    turns = run_sql(db, "SELECT trajectory_id, idx, role, raw, sent FROM turns ORDER BY trajectory_id, idx")
    by_id = {t.id: t for t in ts}
    for tid, idx, role, raw, sent in turns.iter_rows():
        if tid in by_id:
            turn = by_id[tid].turns[idx]
            assert (role, raw, sent) == (turn.role, turn.raw, turn.sent)
    runs = run_sql(db, "SELECT DISTINCT run_id FROM trajectories WHERE run_id IS NOT NULL")
    assert runs["run_id"].to_list() == ["gen-1"]
    assert path.exists()


def test_failed_shard_leaves_nothing_half_written(db, tmp_path):
    shard_dir = tmp_path / "shards"
    write_shard(shard_dir, "trajectories", [traj(question(1))])
    (shard_dir / "judgments-broken.parquet").write_bytes(b"not parquet")
    with Store(db) as s:
        with pytest.raises(StoreError, match="judgments-broken.parquet"):
            s.ingest_shards(shard_dir)
        assert s.counts()["ingested_shards"] == 1  # the good shard committed, the bad one never started


def test_crash_mid_transaction_keeps_committed_rows(db):
    """A writer killed inside a transaction: the file reopens, committed rows are there, the rest is not."""
    script = f"""
import os
from seekhelp.records import Question
from seekhelp.store import Store
s = Store({str(db)!r})
s.add_questions([Question("q0", ["a"])])
with s.transaction():
    s.add_questions([Question("q1", ["b"])])
    os._exit(17)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], capture_output=True)
    assert proc.returncode == 17, proc.stderr.decode()
    with Store(db) as s:
        assert s.counts()["questions"] == 1
        assert s.add_questions([Question("q1", ["b"])]) == 1


def test_reader_beside_a_writer(db):
    """A Store holds the file only inside a transaction. Same process: run_sql borrows the open transaction's
    connection. Another process mid-transaction: the reader waits, then fails in one line, or gets in once the
    transaction ends."""
    with Store(db) as s:
        s.add_questions([question(0)])
        assert run_sql(db, "SELECT count(*) AS n FROM questions")["n"].to_list() == [1]  # no connection held
        with s.transaction():
            s.add_questions([question(1)])
            assert run_sql(db, "SELECT count(*) AS n FROM questions")["n"].to_list() == [1]  # committed state
            with pytest.raises(StoreError, match="only read queries"):
                run_sql(db, "DELETE FROM questions")
    script = (f"from seekhelp.store import Store\ns = Store({str(db)!r})\nwith s.transaction():\n"
              "    print('ready', flush=True)\n    input()\nprint('done', flush=True)\ninput()")
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match=r"in use by another process \(waited"):
            run_sql(db, "SELECT 1", wait_s=0.3)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert run_sql(db, "SELECT count(*) AS n FROM questions", wait_s=10)["n"].to_list() == [2]
        assert proc.stdout.readline().strip() == "done"  # the writer process is still alive, holding nothing
        assert run_sql(db, "SELECT count(*) AS n FROM questions", wait_s=0)["n"].to_list() == [2]
    finally:
        proc.communicate("\n", timeout=30)


def test_scored_view(db):
    q = question()
    t = traj(q, n_llm=2, tokens=5)
    with Store(db) as s:
        s.add_questions([q])
        s.add_trajectories([t])
        s.add_judgments(judge(t, 1.0, leak=0.0, reward=0.9) + [
            {"trajectory_id": t.id, "judge": "leak_detector", "value": 1.0},
            {"trajectory_id": t.id, "judge": "f1", "value": 0.5}])
        s.add_easy([{"question_id": q.id, "slm": "slm-x", "k": 4, "n_correct": 0, "is_easy": False}])
    row = run_sql(db, "SELECT * FROM scored").row(0, named=True)
    assert row["id"] == t.id and row["source"] == "geo" and row["split"] == "train"
    assert row["answers"] == ["City0"] and row["privacy_items"] == q.privacy_items
    assert (row["em"], row["f1"], row["leak_judge"], row["leak_detector"], row["leak"]) == (1.0, 0.5, 0.0, 1.0, 1.0)
    assert row["reward"] == 0.9 and row["r_privacy"] is None and row["is_easy"] is False
    assert row["n_turns"] == 2
    assert (row["slm_tokens"], row["llm_tokens"], row["total_tokens"]) == (30, 20, 50)


def test_scored_leak_is_null_when_unjudged(db):
    t = traj(question())
    with Store(db) as s:
        s.add_trajectories([t])
        s.add_judgments(judge(t, 1.0, leak=None))
    assert run_sql(db, "SELECT leak FROM scored")["leak"].to_list() == [None]


@pytest.mark.parametrize("sql", [
    "INSERT INTO runs (run_id, kind) VALUES ('x', 'y')",
    "DELETE FROM questions",
    "CREATE TABLE evil (a INT)",
    "ATTACH 'other.duckdb' AS o",
    "COPY questions TO 'out.csv'",
    "UPDATE judgments SET value = 1",
    "DROP TABLE turns",
    "SET threads = 1",
    "SELECT 1; DELETE FROM questions",
])
def test_run_sql_rejects_writes(db, sql):
    Store(db).close()
    with pytest.raises(StoreError):
        run_sql(db, sql)


def test_run_sql_accepts_reads_and_connection_is_read_only(db):
    Store(db).close()
    assert run_sql(db, "WITH x AS (SELECT 1 AS a) SELECT a FROM x")["a"].to_list() == [1]
    assert "questions" in run_sql(db, "SHOW TABLES")["name"].to_list()
    assert run_sql(db, "DESCRIBE turns").height == 13
    assert run_sql(db, "PRAGMA table_info('easy')").height == 5
    assert run_sql(db, "SELECT $x AS v", {"x": 3, "unused": 1})["v"].to_list() == [3]
    with pytest.raises(StoreError, match=r"\$x"):
        run_sql(db, "SELECT $x AS v")
    with pytest.raises(StoreError, match="no such store"):
        run_sql(db.with_name("missing.duckdb"), "SELECT 1")
    from seekhelp.store import connect

    con = connect(db, read_only=True)  # the real guard, whatever slips past the statement check
    with pytest.raises(duckdb.Error):
        con.execute("INSERT INTO failures (item_id) VALUES ('x')")
    con.close()


def test_load_query_resolves_names_and_paths(tmp_path, monkeypatch):
    assert "QUALIFY" in load_query("sft_candidates")
    assert load_query("rs_select.sql") == load_query("rs_select")
    f = tmp_path / "mine.sql"
    f.write_text("SELECT 1")
    assert load_query(str(f)) == "SELECT 1"
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        load_query("nothing_here")


def test_ingest_of_partly_stored_shards(db, tmp_path):
    """Shards go in batches by a plain INSERT; a batch with rows stored already is redone shard by shard with the
    conflict handling, with the same result as ingesting each alone: stored rows skipped, later verdicts win."""
    shard_dir = tmp_path / "shards"
    ts = [traj(question(i)) for i in range(3)]
    with Store(db) as s:
        s.add_trajectories(ts[:1])
        s.add_judgments(judge(ts[0], 0.0))
        write_shard(shard_dir, "trajectories", ts)
        write_shard(shard_dir, "trajectories", [traj(question(7))])
        write_shard(shard_dir, "judgments", [r for t in ts for r in judge(t, 1.0)])
        counts = s.ingest_shards(shard_dir)
        assert (counts["shards"], counts["trajectories"], counts["judgments"]) == (3, 3, 6)
        assert counts["turns"] == sum(len(t.turns) for t in ts[1:]) + len(traj(question(7)).turns)
        assert s.counts()["ingested_shards"] == 3 and s.ingest_shards(shard_dir) == {"shards": 0}
    assert run_sql(db, "SELECT value FROM judgments WHERE judge = 'em'")["value"].to_list() == [1.0] * 3
    assert run_sql(db, "SELECT count(*) AS n FROM turns")["n"].to_list() == [sum(len(t.turns) for t in ts) + 3]
