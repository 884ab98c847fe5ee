"""Store commands for the `seekhelp` CLI: sql, stats, export, ingest. `register(app)` adds them to a Typer app.

Every command reports bad input (unknown query, SQL error, missing store, a write statement) as one line on
stderr with exit code 2, never a traceback.
"""

import contextlib
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import duckdb
import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from seekhelp.errors import user_errors
from seekhelp.store.query import (
    default_store_path,
    load_query,
    looks_like_query_file,
    parse_cli_value,
    run_sql,
)
from seekhelp.store.schema import TABLES, StoreError

MAX_CELL = 120  # characters of one value shown by --format table
MAX_COL = 40  # widest column of a one-line-per-row table

StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="DuckDB store file (env SEEKHELP_STORE).",
                                        envvar="SEEKHELP_STORE", show_default=True)]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", help="Query parameter NAME=VALUE (repeatable).")]


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@contextlib.contextmanager
def _user_errors():
    """DuckDB and polars errors of a user's query or output format as StoreErrors, and every user error reported
    by the one handler (seekhelp.errors): one `error:` line, exit 2."""
    with user_errors():
        try:
            yield
        except duckdb.Error as e:
            raise StoreError(f"DuckDB: {str(e).strip().splitlines()[0]}") from e
        except pl.exceptions.PolarsError as e:
            raise StoreError(f"output: {str(e).strip().splitlines()[0]}") from e


def _params(items: list[str] | None) -> dict:
    out = {}
    for item in items or []:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise StoreError(f"--param {item!r}: expected NAME=VALUE")
        out[name.strip().lstrip("$")] = parse_cli_value(value)
    return out


def _query_text(query: str) -> str:
    """SQL given inline, or the text of a .sql file / stored query name."""
    if looks_like_query_file(query):
        try:
            return load_query(query)
        except FileNotFoundError:
            if query.endswith(".sql") or "/" in query:
                raise
            # a bare word that names no query: let DuckDB judge it as SQL (e.g. "SUMMARIZE")
    return query


def _cell(v, width: int = MAX_CELL) -> str:
    if v is None:
        return "∅"
    if isinstance(v, list | dict | pl.Series):
        v = _cell_json(v)
    s = " ↵ ".join(str(v).splitlines()) if isinstance(v, str) else str(v)
    return s if len(s) <= width else s[: width - 1] + "…"


def _cell_json(v) -> str:
    return json.dumps(v.to_list() if isinstance(v, pl.Series) else v, ensure_ascii=False, default=str)


def rich_table(df: pl.DataFrame, title: str | None = None, limit: int | None = None,
               width: int | None = None) -> Table:
    """One line per row; when the columns cannot fit in `width`, one block of (column, value) lines per row."""
    shown = df if limit is None else df.head(limit)
    cells = [[_cell(v) for v in row] for row in shown.iter_rows()]
    need = 1 + sum(min(max([len(c)] + [len(r[i]) for r in cells]), MAX_COL) + 3 for i, c in enumerate(df.columns))
    if width is not None and need > width and len(df.columns) > 2:
        t = Table("column", "value", title=title)
        for k, row in enumerate(cells):
            if k:
                t.add_section()
            for name, value in zip(df.columns, row, strict=True):
                t.add_row(name, value)
    else:
        t = Table(title=title)
        for name in df.columns:
            t.add_column(name, overflow="ellipsis", no_wrap=True, max_width=MAX_COL)
        for row in cells:
            t.add_row(*row)
    if limit is not None and df.height > limit:
        t.caption = f"{limit} of {df.height} rows shown (--limit)"
    return t


def _flat(df: pl.DataFrame) -> pl.DataFrame:
    """Nested columns as JSON text, for CSV."""
    nested = [c for c, dt in df.schema.items() if dt.is_nested()]
    return df.with_columns(pl.col(c).map_elements(_cell_json, return_dtype=pl.String) for c in nested)


def write_result(df: pl.DataFrame, fmt: Format, out: Path | None, limit: int | None = None) -> None:
    if fmt is Format.table:
        if out is None:
            console = Console()
            console.print(rich_table(df, limit=limit, width=console.width))
        else:
            with open(out, "w", encoding="utf-8") as f:
                Console(file=f, width=200).print(rich_table(df, limit=limit, width=200))
    elif fmt is Format.parquet:
        if out is None:
            raise StoreError("--format parquet needs --out FILE")
        df.write_parquet(out)
    elif fmt is Format.csv:
        text = _flat(df).write_csv()
        (out.write_text(text, encoding="utf-8") if out else sys.stdout.write(text))
    else:
        text = df.write_json() + "\n"
        (out.write_text(text, encoding="utf-8") if out else sys.stdout.write(text))
    if out is not None:
        typer.echo(f"{df.height} rows → {out}", err=True)


def sql(query: Annotated[str, typer.Argument(help="SQL text, a .sql file, or a stored query name "
                                                   "(data/queries/NAME.sql, e.g. sft_candidates).")],
        store: StoreOpt = default_store_path(),
        format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead.")] = None,
        param: ParamOpt = None,
        limit: Annotated[int, typer.Option(help="Rows shown by --format table.")] = 50) -> None:
    """Run a read-only query on the store (SELECT / WITH / SHOW / DESCRIBE / EXPLAIN)."""
    with _user_errors():
        df = run_sql(store, _query_text(query), _params(param))
        write_result(df, format, out, limit)


def stats(store: StoreOpt = default_store_path(),
          param: ParamOpt = None) -> None:
    """Row counts per table and the headline numbers of data/queries/stats.sql."""
    with _user_errors():
        counts = run_sql(store, " UNION ALL ".join(
            f"SELECT '{t}' AS \"table\", count(*) AS rows FROM {t}" for t in TABLES if t != "meta"))
        summary = run_sql(store, load_query("stats"), _params(param))
    console = Console()
    console.print(f"store: {store}", highlight=False, soft_wrap=True)
    console.print(rich_table(counts.filter(pl.col("rows") > 0), title="rows per table"))
    if {"source", "split"} <= set(summary.columns):  # one table per source / split keeps the columns readable
        for (source, split), part in summary.group_by(["source", "split"], maintain_order=True):
            console.print(rich_table(part.drop("source", "split"), title=f"{source} / {split}", width=console.width))
    else:
        console.print(rich_table(summary, title="stats.sql", width=console.width))


def export(out: Annotated[Path, typer.Option(help="Output folder (data/*.parquet + provenance.json).")],
           query: Annotated[str, typer.Option(help="Selection query: .sql file or stored query name.")
                            ] = "sft_candidates",
           store: StoreOpt = default_store_path(),
           system_prompt: Annotated[Path | None, typer.Option(help="SLM system prompt file "
                                                              "(default: the slm_dynamic role prompt).")] = None,
           param: ParamOpt = None) -> None:
    """Export the dialogues a query selects as a chat dataset for SFT."""
    from seekhelp.store.export import PROVENANCE_FILE, export_sft

    with _user_errors():
        sql_text = load_query(query) if looks_like_query_file(query) else query
        if system_prompt is not None:
            prompt = system_prompt.read_text(encoding="utf-8").strip()
        else:
            from seekhelp.prompts import load_prompt

            prompt = load_prompt("slm_dynamic")
        ds = export_sft(store, sql_text, out, prompt, params=_params(param))
        prov = json.loads((out / PROVENANCE_FILE).read_text(encoding="utf-8"))
    skipped = ", ".join(f"{k} {v}" for k, v in prov["skipped"].items() if v)
    typer.echo(f"exported {ds.num_rows} dialogues to {out}" + (f" (left out: {skipped})" if skipped else ""))


def ingest(shards: Annotated[Path, typer.Argument(help="Folder of parquet shards written by pipeline steps.")],
           store: StoreOpt = default_store_path()) -> None:
    """Ingest the shards not ingested yet (one transaction per shard)."""
    from seekhelp.store import Store
    from seekhelp.store.ingest import list_shards

    with _user_errors():
        list_shards(shards)  # a missing shard folder is refused before a store is created
        with Store(store) as s:
            counts = s.ingest_shards(shards)
    typer.echo(", ".join(f"{k}: {v}" for k, v in counts.items()))


def register(app: typer.Typer) -> None:
    """Add sql, stats, export and ingest to the main CLI."""
    app.command("sql")(sql)
    app.command("stats")(stats)
    app.command("export")(export)
    app.command("ingest")(ingest)


__all__ = ["export", "ingest", "register", "sql", "stats"]
