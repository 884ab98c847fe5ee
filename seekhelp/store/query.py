"""Read-only SQL over a store, and the named queries in data/queries/.

A query file may declare defaults for its DuckDB named parameters in comment lines:

    -- @param split = 'train'
    -- @param min_reward = 0.5

Values given by the caller win; parameters the statement does not use are dropped, so one params dict can
serve several queries.
"""

import json
import os
import re
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from seekhelp.store.schema import StoreError, check_version

QUERY_DIR = Path("data") / "queries"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_PARAM_LINE = re.compile(r"^\s*--\s*@param\s+([A-Za-z_]\w*)\s*=\s*(.*?)\s*$", re.MULTILINE)

_READ_TYPES = {"SELECT", "EXPLAIN"}
_EXPLAIN_HEAD = re.compile(r"^\s*explain\s+(?:\([^)]*\)\s*)?(?:analy[sz]e\s+)?", re.IGNORECASE)
# PRAGMAs that only report (anything else, e.g. `PRAGMA threads=4`, is refused).
_READ_PRAGMAS = {"show_tables", "show_tables_expanded", "table_info", "show", "database_size", "storage_info",
                 "version", "database_list", "functions", "collations", "platform", "user_agent", "metadata_info"}


def default_store_path() -> Path:
    return Path(os.environ.get("SEEKHELP_STORE") or Path("data") / "store.duckdb")


def query_search_dirs() -> list[Path]:
    return [Path.cwd() / QUERY_DIR, _REPO_ROOT / QUERY_DIR]


def resolve_query(path_or_name: str | Path) -> Path:
    """"sft_candidates" → data/queries/sft_candidates.sql (under the cwd, else the repo root); a path as given."""
    p = Path(path_or_name)
    if p.is_file():
        return p
    candidates = [d / (p.name if p.suffix == ".sql" else f"{p.name}.sql") for d in query_search_dirs()]
    for c in candidates:
        if c.is_file():
            return c
    tried = ", ".join(str(c) for c in [p, *candidates])
    raise FileNotFoundError(f"query {str(path_or_name)!r} not found (looked at {tried})")


def load_query(path_or_name: str | Path) -> str:
    """The SQL text of a query file or of a named query in data/queries/."""
    return resolve_query(path_or_name).read_text(encoding="utf-8")


def looks_like_query_file(text: str) -> bool:
    """A CLI argument that names a file / stored query rather than containing SQL."""
    t = text.strip()
    return bool(t) and ("\n" not in t) and (" " not in t) and (t.endswith(".sql") or re.fullmatch(r"[\w./-]+", t)
                                                                is not None)


def param_defaults(sql: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in _PARAM_LINE.findall(sql):
        if raw.startswith("'") and raw.find("'", 1) > 0:  # a quoted string, maybe followed by a comment
            out[name] = raw[1:raw.find("'", 1)]
        else:
            out[name] = parse_cli_value(raw.split("--", 1)[0].strip())
    return out


def parse_cli_value(raw: str) -> Any:
    """`--param k=v` values: numbers, true/false/null as JSON, anything else as a string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def check_read_only(sql: str) -> duckdb.Statement:
    """The single statement of `sql`, if it only reads; StoreError otherwise."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise StoreError(f"SQL does not parse: {_first_line(e)}") from e
    if len(statements) != 1:
        raise StoreError(f"expected exactly one SQL statement, got {len(statements)}")
    stmt = statements[0]
    kind = stmt.type.name
    if kind == "EXPLAIN":  # EXPLAIN ANALYZE runs its statement (e.g. a COPY ... TO that writes a file)
        check_read_only(_EXPLAIN_HEAD.sub("", _strip_comments(stmt.query), count=1))
    if kind in _READ_TYPES:
        return stmt
    if kind == "PRAGMA":
        m = re.match(r"\s*pragma\s+(\w+)", _strip_comments(stmt.query), re.IGNORECASE)
        if m and m.group(1).lower() in _READ_PRAGMAS:
            return stmt
    raise StoreError(f"only read queries are allowed (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, PRAGMA show); "
                     f"got {kind}")


def run_sql(store_path: str | Path, sql: str, params: dict[str, Any] | None = None,
            wait_s: float | None = None) -> pl.DataFrame:
    """Run one read-only statement on a store opened read-only; the result as a polars DataFrame.

    While another process writes, wait up to `wait_s` (default 30 s, env SEEKHELP_STORE_WAIT_S) for the file."""
    from seekhelp.store import connect  # late: the package imports this module

    stmt = check_read_only(sql)
    bound = {**param_defaults(sql), **(params or {})}
    wanted = set(stmt.named_parameters)
    missing = sorted(wanted - set(bound))
    if missing:
        raise StoreError(f"query needs parameter(s) {', '.join('$' + m for m in missing)} "
                         f"(pass --param NAME=VALUE or add '-- @param NAME = VALUE' to the query)")
    con = connect(store_path, read_only=True, wait_s=wait_s)
    try:
        check_version(con, str(store_path))
        rel = con.sql(stmt.query, params={k: bound[k] for k in wanted} if wanted else None)
        if rel is None:
            return pl.DataFrame()
        return rel.pl()
    except duckdb.Error as e:
        raise StoreError(f"query failed: {_first_line(e)}") from e
    finally:
        con.close()


def _strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
