"""The per-kind columns of the RL round table: computed in validation, stored (old stores migrated), printed,
reported. No model: the runner's sampling is replaced by hand-made trajectories."""

from types import SimpleNamespace

import pytest

from rl.rounds import COLUMNS, KIND_COLUMNS, RL_ROUNDS_DDL, RoundRunner, kind_columns
from seekhelp.records import Question, Trajectory, Turn
from seekhelp.rewards import RewardConfig
from seekhelp.store import Store


def _q(text, answer, kind=None):
    return Question(question=text, answers=[answer], privacy_items=[], source="geo", split="validation",
                    meta={"kind": kind} if kind else {})


ALONE_1 = _q("What is the capital of Peru?", "Lima", "self_contained")
ALONE_2 = _q("What is the capital of Spain?", "Madrid", "self_contained")
MISSING = _q("My friend lives in the capital of the country I visited. Which city?", "Rome", "one_missing")
HUB = _q("Who wrote Hamlet?", "Shakespeare")  # no kind (a hub question): it counts as needing a fact
QS = [ALONE_1, ALONE_2, MISSING, HUB]


def _traj(q, answer, calls):
    turns = []
    for _ in range(calls):
        turns += [Turn(role="slm", raw="m", action="message", content="What is it?"),
                  Turn(role="llm", raw="<information>x</information>", action="information", content="x",
                       sent="What is it?")]
    turns.append(Turn(role="slm", raw=answer, action="answer", content=answer))
    return Trajectory(question_id=q.id, strategy="dynamic", slm="policy", llm="llm", turns=turns, final_answer=answer,
                      format_ok=True)


# self-contained: Lima right without a call, Madrid wrong after 2 calls; the others: Rome right, Hamlet wrong
TRAJS = [_traj(ALONE_1, "Lima", 0), _traj(ALONE_2, "Paris", 2), _traj(MISSING, "Rome", 1),
         _traj(HUB, "Marlowe", 1)]


def test_kind_columns_split_self_contained_from_the_rest():
    rows = [{"question_id": t.question_id, "n_turns": t.n_llm_calls, "r_quality": float(t.final_answer in
                                                                                         ("Lima", "Rome"))}
            for t in TRAJS]
    assert kind_columns(QS, rows) == {"n_self_contained": 2, "calls_self_contained": 1.0, "em_self_contained": 0.5,
                                      "em_needs_fact": 0.5}
    only_hub = kind_columns([HUB], rows[3:])
    assert only_hub == {"n_self_contained": 0, "calls_self_contained": None, "em_self_contained": None,
                        "em_needs_fact": 0.0}


def test_validation_row_carries_the_kind_columns():
    runner = RoundRunner.__new__(RoundRunner)  # no store, no model: the sampling steps are replaced
    stored = []
    runner.recipe = SimpleNamespace()
    runner.reward_cfg = RewardConfig()
    runner.val_qs = QS
    runner.store = SimpleNamespace(add_trajectories=lambda t, run_id: stored.extend(t),
                                   add_judgments=lambda j, run_id: None)
    runner._backend = lambda r: SimpleNamespace(name="policy")
    runner._runtime = lambda slm, temperature, seed: None
    runner._episodes = lambda rt, questions, desc, **kw: [next(t for t in TRAJS if t.question_id == q.id)
                                                          for q in questions]
    runner.easy_flags = lambda questions, r: {}
    row = runner.validate(1, "rl-test")
    assert stored == TRAJS and row["n"] == 4 and row["em"] == 0.5 and row["turns"] == 1.0
    assert {k: row[k] for k in KIND_COLUMNS} == {"n_self_contained": 2, "calls_self_contained": 1.0,
                                                 "em_self_contained": 0.5, "em_needs_fact": 0.5}


OLD_DDL = """
CREATE TABLE rl_rounds (
    run VARCHAR, round INTEGER, split VARCHAR, policy VARCHAR, n INTEGER, mean_reward DOUBLE,
    r_format DOUBLE, r_quality DOUBLE, r_feedback DOUBLE, r_privacy DOUBLE, r_efficiency DOUBLE,
    em DOUBLE, turns DOUBLE, leak_rate DOUBLE, valid_rate DOUBLE, n_rollouts INTEGER, n_selected INTEGER,
    wall_s DOUBLE, PRIMARY KEY (run, round, split))
"""


def test_an_old_store_gets_the_columns_and_prints_dashes_for_old_rounds(tmp_path, capsys):
    with Store(tmp_path / "s.duckdb") as s:
        s.execute(OLD_DDL)
        s.execute("INSERT INTO rl_rounds (run, round, split, policy, n, em) "
                  "VALUES ('x', 0, 'validation', 'p', 4, 0.5)")
        s.execute(RL_ROUNDS_DDL)
        s.execute(RL_ROUNDS_DDL)  # idempotent
        new = {"run": "x", "round": 1, "split": "validation", "policy": "p", "n": 4, "em": 0.75,
               "n_self_contained": 2, "calls_self_contained": 0.5, "em_self_contained": 1.0, "em_needs_fact": 0.5}
        s.execute(f"INSERT OR REPLACE INTO rl_rounds ({', '.join(new)}) VALUES ({', '.join('?' * len(new))})",
                  list(new.values()))
        rows = s.sql(f"SELECT {', '.join(COLUMNS)} FROM rl_rounds ORDER BY round").to_dicts()
    assert rows[0]["calls_self_contained"] is None and rows[1]["em_needs_fact"] == pytest.approx(0.5)
    RoundRunner.print_table(rows)
    out = capsys.readouterr().out
    assert "calls_self_contained" in out and "em_needs_fact" in out and "–" in out and "None" not in out


def test_the_report_shows_the_kind_columns(tmp_path):
    from seekhelp.evaluation.report import write_report

    metrics = [{"run_name": "dynamic (rl)", "kind": "run", "strategy": "dynamic", "slm": "s", "llm": "l",
                "dataset": "geo-test", "n": 4, "em": 50.0}]
    rounds = [{"run": "rl", "round": 0, "split": "validation", "mean_reward": 0.1, "em": 0.5, "turns": 1.0,
               "leak_rate": 0.0, "valid_rate": 1.0},  # a round stored before the kind columns existed
              {"run": "rl", "round": 1, "split": "validation", "mean_reward": 0.2, "em": 0.5, "turns": 0.8,
               "leak_rate": 0.0, "valid_rate": 1.0, "n_self_contained": 2, "calls_self_contained": 0.25,
               "em_self_contained": 1.0, "em_needs_fact": 0.4}]
    text = write_report(tmp_path, metrics, {"title": "t"}, rounds).read_text()
    table = text.split("## RL rounds")[1]
    assert "LLM calls self-contained (n)" in table and "EM needs a fact" in table
    assert "| 0.25 (2) | 1.000 | 0.400 |" in table and "| – | – | – |" in table


def test_the_eval_report_lists_only_the_rounds_of_the_runs_it_reads(tmp_path, monkeypatch):
    """A store that holds several RL runs (rl.seeds beside the demo's) reports the rounds of the evaluated models'
    runs only: the RL run and its control behind `<run>/round-N` folders, not a sibling seed's."""
    from seekhelp.evaluation.harness import rounds_of

    monkeypatch.chdir(tmp_path)
    rows = [{"run": run, "round": r} for run in ("data/models/rl/demo", "data/models/rl/demo/control",
                                                 "data/models/rl/seeds/seed-1", "data/models/rl/seeds/seed-1/control")
            for r in (0, 1)]
    control = str(tmp_path / "data/models/rl/demo/control/round-1")  # an absolute path names the same run
    got = rounds_of(rows, ["data/models/sft/demo", "data/models/rl/demo/round-1", control])
    want = {(run, r) for run in ("data/models/rl/demo", "data/models/rl/demo/control") for r in (0, 1)}
    assert {(r["run"], r["round"]) for r in got} == want
    assert rounds_of(rows, ["data/models/sft/demo"]) == []


def test_rounds_read_no_probe_question(tmp_path):
    """The data recipe's probe questions (meta.probe, validation) are for the eval: RL's validation and train slices
    never draw them, whatever the recipe's source filter."""
    probe = Question(question="My friend lives in Peru. Her passport number is X12345678. Which capital?",
                     answers=["Lima"], privacy_items=["x"], source="geo-probe-id", split="validation",
                     meta={"kind": "one_missing", "probe": "id"})
    store = Store(tmp_path / "s.duckdb")
    store.add_questions([*QS, probe])
    runner = RoundRunner.__new__(RoundRunner)
    runner.store = store
    for source in (None, "geo-probe-id"):
        runner.recipe = SimpleNamespace(source=source)
        got = {q.id for q in runner._questions("validation", 100)}
        assert got == ({q.id for q in QS} if source is None else set())
