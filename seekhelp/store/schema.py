"""The store's tables and the `scored` view, as DDL, plus the schema-version check.

Version 1 is the first layout. A store written by a newer seekhelp (a higher `schema_version` in `meta`)
is refused rather than misread; an older one would be migrated here once there is a version 2.
"""

import duckdb

from seekhelp.errors import SeekhelpError

SCHEMA_VERSION = 1

# Judge names pivoted into columns of `scored` (anything else stays reachable in `judgments`). leak_detector and
# leak_judge judge what the policy TRIED to send (before the guard); leak_sent what left the device.
JUDGES = ("em", "f1", "leak_detector", "leak_sent", "leak_judge", "reward",
          "r_format", "r_quality", "r_feedback", "r_privacy", "r_efficiency")

TABLES = ("meta", "runs", "questions", "trajectories", "turns", "judgments", "easy", "failures", "ingested_shards")


class StoreError(SeekhelpError):
    """A problem with a store or a query that the user can fix; its message is one readable line."""


DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR
);

-- One row per pipeline / training / eval invocation that wrote into the store.
CREATE TABLE IF NOT EXISTS runs (
    run_id       VARCHAR PRIMARY KEY,
    kind         VARCHAR NOT NULL,
    config       JSON,
    models       JSON,
    code_version VARCHAR,
    started_at   TIMESTAMP,
    finished_at  TIMESTAMP,
    status       VARCHAR,
    notes        VARCHAR
);

CREATE TABLE IF NOT EXISTS questions (
    id                VARCHAR PRIMARY KEY,
    question          VARCHAR NOT NULL,
    answers           VARCHAR[],
    privacy_items     VARCHAR[],
    original_question VARCHAR,
    source            VARCHAR,
    split             VARCHAR,
    meta              JSON,
    run_id            VARCHAR
);

CREATE TABLE IF NOT EXISTS trajectories (
    id                    VARCHAR PRIMARY KEY,
    question_id           VARCHAR NOT NULL,
    strategy              VARCHAR,
    slm                   VARCHAR,
    llm                   VARCHAR,
    sample_index          INTEGER,
    config_hash           VARCHAR,
    round                 INTEGER,
    final_answer          VARCHAR,
    stop_reason           VARCHAR,
    format_ok             BOOLEAN,
    raw_question_sent     BOOLEAN,
    n_llm_calls           INTEGER,
    slm_prompt_tokens     BIGINT,
    slm_completion_tokens BIGINT,
    llm_prompt_tokens     BIGINT,
    llm_completion_tokens BIGINT,
    error                 VARCHAR,
    created_at            TIMESTAMP,
    run_id                VARCHAR
);

-- Every model call of a trajectory, in order (idx from 0). `sent` = what left the device on LLM turns.
CREATE TABLE IF NOT EXISTS turns (
    trajectory_id     VARCHAR NOT NULL,
    idx               INTEGER NOT NULL,
    role              VARCHAR,
    raw               VARCHAR,
    action            VARCHAR,
    content           VARCHAR,
    think             VARCHAR,
    errors            VARCHAR[],
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    latency_s         DOUBLE,
    sent              VARCHAR,
    guard             VARCHAR,
    PRIMARY KEY (trajectory_id, idx)
);

-- One verdict of one judge on one trajectory; re-judging replaces it.
CREATE TABLE IF NOT EXISTS judgments (
    trajectory_id VARCHAR NOT NULL,
    judge         VARCHAR NOT NULL,
    value         DOUBLE,
    label         VARCHAR,
    details       JSON,
    run_id        VARCHAR,
    created_at    TIMESTAMP,
    PRIMARY KEY (trajectory_id, judge)
);

-- Can the SLM answer the question alone? k solo samples, n_correct of them right.
CREATE TABLE IF NOT EXISTS easy (
    question_id VARCHAR NOT NULL,
    slm         VARCHAR NOT NULL,
    k           INTEGER,
    n_correct   INTEGER,
    is_easy     BOOLEAN,
    PRIMARY KEY (question_id, slm)
);

-- Items a stage could not produce (kept so reruns can report or retry them).
CREATE TABLE IF NOT EXISTS failures (
    item_id    VARCHAR,
    stage      VARCHAR,
    reason     VARCHAR,
    run_id     VARCHAR,
    created_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS ingested_shards (
    file_name   VARCHAR PRIMARY KEY,
    sha256      VARCHAR,
    kind        VARCHAR,
    n_rows      BIGINT,
    ingested_at TIMESTAMP
);
"""

_PIVOT = ",\n        ".join(f"max(value) FILTER (WHERE judge = '{j}') AS {j}" for j in JUDGES)

SCORED_VIEW = f"""
CREATE OR REPLACE VIEW scored AS
WITH j AS (
    SELECT trajectory_id,
        {_PIVOT}
    FROM judgments
    GROUP BY trajectory_id
)
SELECT
    t.id, t.question_id, t.strategy, t.slm, t.llm, t.sample_index, t.config_hash, t.round,
    t.final_answer, t.stop_reason, t.format_ok, t.raw_question_sent, t.error, t.created_at, t.run_id,
    q.source, q.split, q.answers, q.privacy_items,
    {", ".join(f"j.{name}" for name in JUDGES)},
    greatest(j.leak_detector, j.leak_judge) AS leak,  -- NULLs ignored; NULL when neither judged
    e.is_easy,
    t.n_llm_calls AS n_turns,
    t.slm_prompt_tokens, t.slm_completion_tokens, t.llm_prompt_tokens, t.llm_completion_tokens,
    t.slm_prompt_tokens + t.slm_completion_tokens AS slm_tokens,
    t.llm_prompt_tokens + t.llm_completion_tokens AS llm_tokens,
    t.slm_prompt_tokens + t.slm_completion_tokens + t.llm_prompt_tokens + t.llm_completion_tokens AS total_tokens
FROM trajectories t
LEFT JOIN questions q ON q.id = t.question_id
LEFT JOIN j ON j.trajectory_id = t.id
LEFT JOIN easy e ON e.question_id = t.question_id AND e.slm = t.slm;
"""


def stored_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The schema version written in the store, or None for an empty (new) database file."""
    has_meta = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta' AND table_schema = 'main'"
    ).fetchall()[0][0]
    if not has_meta:
        return None
    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    return int(rows[0][0]) if rows else None


def check_version(con: duckdb.DuckDBPyConnection, path: str) -> int | None:
    version = stored_version(con)
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(f"{path}: store schema version {version} is newer than this seekhelp ({SCHEMA_VERSION}); "
                         "upgrade seekhelp")
    return version


def ensure_schema(con: duckdb.DuckDBPyConnection, path: str) -> None:
    """Create missing tables and the view in one transaction; refuse stores from a newer seekhelp."""
    version = check_version(con, path)
    con.begin()
    try:
        con.execute(DDL)
        con.execute(SCORED_VIEW)
        if version is None:
            con.execute("INSERT INTO meta VALUES ('schema_version', ?) "
                        "ON CONFLICT DO UPDATE SET value = excluded.value", [str(SCHEMA_VERSION)])
        con.commit()
    except Exception:
        con.rollback()
        raise
