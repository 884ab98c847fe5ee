"""The store's CLI commands (sql, stats, export, ingest) through typer's CliRunner."""

import json

import pytest
import typer
from typer.testing import CliRunner

from seekhelp.records import Question, Trajectory, Turn
from seekhelp.store import Store, write_shard
from seekhelp.store.commands import register

runner = CliRunner()


def make_app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def trajectory(q: Question, sample: int = 0) -> Trajectory:
    turns = [Turn("slm", "<think>hm</think>\n<message>capital of France?</message>", "message", "capital of France?"),
             Turn("llm", "<information>Paris</information>", "information", "Paris", sent="capital of France?"),
             Turn("slm", "<think>ok</think>\n<answer>Paris</answer>", "answer", "Paris")]
    return Trajectory(q.id, "dynamic", "slm-x", "llm-y", turns, final_answer="Paris", stop_reason="answer",
                      sample_index=sample)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store.duckdb"
    qs = [Question(f"Where does my cousin {i} live?", ["Paris"], [f"cousin {i} lives in Paris"], source="geo",
                   split="train") for i in range(2)]
    ts = [trajectory(q) for q in qs]
    with Store(path) as s:
        s.add_questions(qs)
        s.add_trajectories(ts)
        s.add_judgments([{"trajectory_id": t.id, "judge": j, "value": v} for t in ts
                         for j, v in (("em", 1.0), ("leak_judge", 0.0))])
    return path


def invoke(*args: str, env: dict | None = None):
    return runner.invoke(make_app(), list(args), env=env)


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    for n in needles:
        assert n in lines[0]


def test_sql_table(store):
    result = invoke("sql", "SELECT count(*) AS n_traj FROM trajectories", "--store", str(store))
    assert result.exit_code == 0, result.output
    assert "n_traj" in result.stdout and "2" in result.stdout


def test_sql_csv_and_json(store):
    result = invoke("sql", "SELECT id, answers FROM questions ORDER BY id", "-s", str(store), "-f", "csv")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "id,answers" and len(lines) == 3 and '["Paris"]' in lines[1].replace('""', '"')
    result = invoke("sql", "SELECT id, n_turns, answers FROM scored", "-s", str(store), "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 2 and rows[0]["n_turns"] == 1 and rows[0]["answers"] == ["Paris"]


def test_sql_stored_query_with_param_and_env_store(store, tmp_path):
    env = {"SEEKHELP_STORE": str(store)}
    result = invoke("sql", "sft_candidates", "--param", "split=train", "-f", "json", env=env)
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 2
    result = invoke("sql", "sft_candidates", "-p", "split=test", "-f", "json", "-s", str(store))
    assert json.loads(result.stdout) == []


def test_sql_parquet_to_file(store, tmp_path):
    out = tmp_path / "q.parquet"
    result = invoke("sql", "SELECT * FROM turns", "-s", str(store), "-f", "parquet", "-o", str(out))
    assert result.exit_code == 0, result.output
    import polars as pl

    assert pl.read_parquet(out).height == 6
    assert_one_line_error(invoke("sql", "SELECT 1", "-s", str(store), "-f", "parquet"), "--out")


def test_sql_bad_input_is_one_line(store, tmp_path):
    assert_one_line_error(invoke("sql", "SELEC * FROM nowhere", "-s", str(store)), "SQL")
    assert_one_line_error(invoke("sql", "SELECT * FROM nowhere", "-s", str(store)), "nowhere")
    assert_one_line_error(invoke("sql", "DELETE FROM questions", "-s", str(store)), "DELETE")
    assert_one_line_error(invoke("sql", "missing_query.sql", "-s", str(store)), "missing_query")
    assert_one_line_error(invoke("sql", "SELECT 1", "-s", str(tmp_path / "none.duckdb")), "none.duckdb")
    assert_one_line_error(invoke("sql", "SELECT $x", "-s", str(store)), "$x")
    assert_one_line_error(invoke("sql", "SELECT 1", "-s", str(store), "-p", "novalue"), "NAME=VALUE")


def test_stats(store):
    result = invoke("stats", "--store", str(store), env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "trajectories" in result.stdout and "em_pct" in result.stdout and "dynamic" in result.stdout
    assert "geo / train" in result.stdout and "100.0" in result.stdout


def test_export_and_ingest(store, tmp_path):
    pytest.importorskip("datasets")
    prompt = tmp_path / "system.txt"
    prompt.write_text("You are the small model.")
    out = tmp_path / "sft"
    result = invoke("export", "--query", "sft_candidates", "--out", str(out), "--store", str(store),
                    "--system-prompt", str(prompt))
    assert result.exit_code == 0, result.output
    assert "exported 2 dialogues" in result.stdout
    assert (out / "provenance.json").exists()
    bad = invoke("export", "--query", "nope.sql", "--out", str(out), "--store", str(store))
    assert_one_line_error(bad, "nope.sql")

    shards = tmp_path / "shards"
    q = Question("Another question?", ["x"])
    write_shard(shards, "questions", [q])
    write_shard(shards, "trajectories", [trajectory(q)])
    result = invoke("ingest", str(shards), "--store", str(store))
    assert result.exit_code == 0, result.output
    assert "shards: 2" in result.stdout and "turns: 3" in result.stdout
    assert_one_line_error(invoke("ingest", str(tmp_path / "no-shards"), "--store", str(store)), "no-shards")
