"""Secrets never land in files: the data pipeline (with its LLM judge using the API key), an export, a dataset push
dry run and a model push dry run, all with recognisable fake keys in the environment; then every file they wrote
(decoded where it is compressed: DuckDB stores through SQL, parquet through Arrow) and their captured output is
scanned for the keys. And `seekhelp sql` never writes.
"""

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from seekhelp.backends.scripted_server import ScriptedServer
from tests.reliability.conftest import child_env, generate_args, run_module, sha256

OPENAI_KEY = "sk-test-SEEKHELP-CANARY-123456789"
HF_TOKEN = "hf_SEEKHELPCANARYabcdefghijklmnopqrstuv"
NEEDLES = (OPENAI_KEY, HF_TOKEN, "SEEKHELP-CANARY", "SEEKHELPCANARY")
VERDICT = json.dumps({"reason": "objective", "leaked_items": [], "leak": False})


def _duckdb_text(path: Path) -> str:
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_type = 'BASE TABLE'").fetchall()]
        return "\n".join(str(con.execute(f'SELECT string_agg(CAST(x AS VARCHAR), \'\n\') FROM "{t}" x').fetchone()[0])
                         for t in tables)
    finally:
        con.close()


def scan(root: Path) -> dict[str, list[str]]:
    """file -> needles found in it; raw bytes for every file, decoded contents for stores and parquet files."""
    hits: dict[str, list[str]] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        texts = [p.read_bytes().decode("utf-8", errors="replace")]
        if p.suffix == ".duckdb":
            texts.append(_duckdb_text(p))
        elif p.suffix == ".parquet":
            texts.append(json.dumps(pq.read_table(p).to_pylist(), default=str))
        found = sorted({n for n in NEEDLES for t in texts if n in t})
        if found:
            hits[str(p.relative_to(root))] = found
    return hits


def test_scanner_finds_a_planted_key(tmp_path):
    """Positive control: the scan sees a key inside a DuckDB store, a zstd parquet shard and a text file."""
    from seekhelp.records import Question
    from seekhelp.store import Store, write_shard

    q = Question(question=f"Is {OPENAI_KEY} a key?", answers=["yes"])
    with Store(tmp_path / "s.duckdb") as s:
        s.add_questions([q])
    shard = write_shard(tmp_path / "shards", "questions", [q])
    (tmp_path / "log.txt").write_text(f"token={HF_TOKEN}\n")
    assert set(scan(tmp_path)) == {"s.duckdb", "log.txt", str(shard.relative_to(tmp_path))}


def test_no_secret_in_any_file_written(tmp_path):
    work, logs = tmp_path / "work", tmp_path / "logs"
    for d in (work, logs, tmp_path / "home", tmp_path / "tmp", tmp_path / "hf"):
        d.mkdir()
    env = child_env(OPENAI_API_KEY=OPENAI_KEY, HF_TOKEN=HF_TOKEN, HOME=str(tmp_path / "home"),
                    TMPDIR=str(tmp_path / "tmp"), HF_HOME=str(tmp_path / "hf"), XDG_CACHE_HOME=str(tmp_path / "home"))
    store = work / "data" / "store.duckdb"

    server = ScriptedServer(lambda messages: VERDICT)
    auth: list[str | None] = []

    class Recording(server._httpd.RequestHandlerClass):  # note the key the client sends: it was really in use
        def do_POST(self):
            auth.append(self.headers.get("Authorization"))
            return super().do_POST()

    server._httpd.RequestHandlerClass = Recording
    steps = {}
    with server:
        steps["generate"] = run_module("pipelines.generate", *generate_args(
            store, work / "data" / "shards", "seeds.n_per_split={train: 12, validation: 2, test: 2}",
            "judge.llm_judge=true", "judge.limit=null", f"endpoint.base_url={server.base_url}",
            "endpoint.model=scripted"), env=env, cwd=work)
    model = work / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    (model / "recipe.yaml").write_text("learning_rate: 0.0001\n")
    steps["export"] = run_module("seekhelp.cli", "export", "--out", work / "exports" / "sft", "--store", store,
                                 env=env, cwd=work)
    steps["push-dataset"] = run_module("seekhelp.cli", "push-dataset", "--repo", "me/seekhelp-canary", "--folder",
                                       work / "exports" / "sft", "--dry-run", env=env, cwd=work)
    steps["push-model"] = run_module("seekhelp.cli", "push-model", model, "--repo", "me/seekhelp-canary-model",
                                     "--dry-run", env=env, cwd=work)
    for name, res in steps.items():
        (logs / f"{name}.stdout").write_text(res.stdout)
        (logs / f"{name}.stderr").write_text(res.stderr)
        assert res.returncode == 0, f"{name}: {res.stderr[-3000:]}"
    assert auth and all(a == f"Bearer {OPENAI_KEY}" for a in auth), "the judge did not use the key"
    staged = list((tmp_path / "tmp").glob("seekhelp-push-*"))
    assert len(staged) == 2 and all(any(p.iterdir()) for p in staged), staged  # both dry runs staged files
    n_files = sum(1 for p in tmp_path.rglob("*") if p.is_file())
    hits = scan(tmp_path)
    print(f"secrets: scanned {n_files} files, {len(auth)} authorized judge calls, hits: {hits}")
    assert hits == {}


@pytest.mark.parametrize("statement", [
    "DELETE FROM questions",
    "INSERT INTO questions (id, question) VALUES ('x', 'y')",
    "UPDATE questions SET question = 'changed'",
    "DROP TABLE questions",
    "CREATE TABLE t AS SELECT 1",
    "ALTER TABLE questions ADD COLUMN x INTEGER",
    "COPY questions TO '{dir}/copied.csv'",
    "EXPLAIN ANALYZE COPY (SELECT 42) TO '{dir}/explained.csv'",
    "EXPLAIN ANALYZE DELETE FROM questions",
    "ATTACH '{dir}/other.duckdb' AS other",
    "EXPORT DATABASE '{dir}/exported'",
    "CHECKPOINT",
    "SET threads = 1",
    "PRAGMA threads = 1",
    "SELECT 1; DELETE FROM questions",
    "INSTALL httpfs",
    "BEGIN TRANSACTION",
])
def test_sql_refuses_writes_and_leaves_the_store_as_it_was(statement, small_store, tmp_path):
    from typer.testing import CliRunner

    from seekhelp.cli import app

    out_dir = tmp_path / "side-effects"
    out_dir.mkdir()
    before = sha256(small_store), sorted(p.name for p in small_store.parent.iterdir())
    res = CliRunner().invoke(app, ["sql", statement.replace("{dir}", str(out_dir)), "--store", str(small_store)])
    assert res.exit_code == 2, res.output
    assert (sha256(small_store), sorted(p.name for p in small_store.parent.iterdir())) == before
    assert list(out_dir.iterdir()) == []
    ok = CliRunner().invoke(app, ["sql", "SELECT count(*) AS n FROM questions", "--store", str(small_store),
                                  "--format", "json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout) == [{"n": 5}]
