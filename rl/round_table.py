"""The `rl_rounds` table: one validation row per round and arm (RL, control), its columns and the kind columns;
per-question validation rewards and paired differences between rounds."""

from seekhelp.records import Question

RL_ROUNDS_DDL = """
CREATE TABLE IF NOT EXISTS rl_rounds (
    run VARCHAR, round INTEGER, split VARCHAR, policy VARCHAR, n INTEGER, mean_reward DOUBLE,
    r_format DOUBLE, r_quality DOUBLE, r_feedback DOUBLE, r_privacy DOUBLE, r_efficiency DOUBLE,
    em DOUBLE, turns DOUBLE, leak_rate DOUBLE, valid_rate DOUBLE, n_rollouts INTEGER, n_selected INTEGER,
    wall_s DOUBLE, PRIMARY KEY (run, round, split));
"""
# columns added after the first layout (older stores get them when the next round runs); NULL in older rows
KIND_COLUMNS = {"n_self_contained": "INTEGER", "calls_self_contained": "DOUBLE", "em_self_contained": "DOUBLE",
                "em_needs_fact": "DOUBLE"}
ADDED_COLUMNS = KIND_COLUMNS | {"n_fallback": "INTEGER"}
RL_ROUNDS_DDL += "".join(f"ALTER TABLE rl_rounds ADD COLUMN IF NOT EXISTS {k} {v};\n"
                         for k, v in ADDED_COLUMNS.items())
COLUMNS = ["round", "policy", "n", "mean_reward", "r_format", "r_quality", "r_feedback", "r_privacy",
           "r_efficiency", "em", "turns", "leak_rate", "valid_rate", *KIND_COLUMNS, "n_rollouts", "n_selected",
           "n_fallback", "wall_s"]


def kind_columns(questions: list[Question], rows: list[dict]) -> dict:
    """LLM calls and EM on the self-contained validation questions, and EM on the others (the questions that need a
    fact; a question without `meta["kind"]`, e.g. from a hub dataset, is one of them). `rows` are score()'s
    per-trajectory summaries (question_id, n_turns = LLM calls, r_quality = EM); None where a group is empty."""
    kinds = {q.id: (q.meta or {}).get("kind") for q in questions}
    alone = [x for x in rows if kinds.get(x["question_id"]) == "self_contained"]
    other = [x for x in rows if kinds.get(x["question_id"]) != "self_contained"]

    def mean(xs: list[dict], key: str) -> float | None:
        return round(sum(float(x[key]) for x in xs) / len(xs), 4) if xs else None

    return {"n_self_contained": len(alone), "calls_self_contained": mean(alone, "n_turns"),
            "em_self_contained": mean(alone, "r_quality"), "em_needs_fact": mean(other, "r_quality")}


def validation_rewards(store, run_id: str, r: int) -> dict[str, float]:
    """Round r's reward per validation question (its greedy episode, as the round's `validate` stored it)."""
    rows = store.sql(
        "SELECT t.question_id, max(j.value) AS reward FROM trajectories t "
        "JOIN judgments j ON j.trajectory_id = t.id AND j.judge = 'reward' "
        "JOIN questions q ON q.id = t.question_id "
        "WHERE t.run_id = $run AND t.round = $r AND q.split = 'validation' GROUP BY t.question_id",
        {"run": run_id, "r": r}).to_dicts()
    return {x["question_id"]: float(x["reward"]) for x in rows}


def paired_difference(a: dict[str, float], b: dict[str, float]) -> dict | None:
    """A − B question by question with a paired bootstrap interval: how far a round's lead is from noise. None where
    the two share no question."""
    from seekhelp.metrics import bootstrap_ci

    common = sorted(set(a) & set(b))
    if not common:
        return None
    diffs = [a[q] - b[q] for q in common]
    lo, hi = bootstrap_ci(diffs)
    return {"n": len(common), "diff": round(sum(diffs) / len(diffs), 4), "ci": [round(lo, 4), round(hi, 4)]}
