"""The stored queries that choose training data: sft_candidates.sql, rs_select.sql and stats.sql."""

import pytest

from seekhelp.records import Trajectory
from seekhelp.store import Store, load_query, run_sql
from tests.unit.test_store import judge, question, traj


@pytest.fixture
def db(tmp_path):
    return tmp_path / "store.duckdb"


def test_sft_candidates_pick_fewest_turns_correct_non_leaking(db):
    q0, q1, q2 = question(0), question(1), question(2, split="test")
    best = traj(q0, n_llm=1, sample=0)
    longer = traj(q0, n_llm=2, sample=1)
    leaking = traj(q0, n_llm=0, sample=2)  # fewest turns, but leaks
    wrong = traj(q0, n_llm=0, answer="Nope", sample=3)
    malformed = traj(q0, n_llm=0, sample=4, format_ok=False)
    stopped = traj(q0, n_llm=0, sample=5, stop="n_max")
    q1_tie_a, q1_tie_b = traj(q1, n_llm=1, sample=0, tokens=9), traj(q1, n_llm=1, sample=1, tokens=7)
    test_split = traj(q2, n_llm=0)
    everything = [best, longer, leaking, wrong, malformed, stopped, q1_tie_a, q1_tie_b, test_split]
    with Store(db) as s:
        s.add_questions([q0, q1, q2])
        s.add_trajectories(everything)
        rows = [r for t in everything for r in judge(t, 0.0 if t is wrong else 1.0, leak=1.0 if t is leaking else 0.0)]
        s.add_judgments(rows)
    out = run_sql(db, load_query("sft_candidates"))
    assert dict(zip(out["question_id"], out["trajectory_id"], strict=True)) == {q0.id: best.id, q1.id: q1_tie_b.id}
    test_out = run_sql(db, load_query("sft_candidates"), {"split": "test"})
    assert test_out["trajectory_id"].to_list() == [test_split.id]
    assert run_sql(db, load_query("sft_candidates"), {"split": "*"}).height == 3


def test_sft_candidates_keep_one_request_per_hop_for_two_hop_questions(db):
    """A two-hop question keeps the dialogue that asks each hop on its own (the most requests); other kinds and
    `one_request_per_hop=''` keep the fewest requests."""
    import dataclasses

    hop2 = dataclasses.replace(question(0), meta={"kind": "two_hop"})
    one = dataclasses.replace(question(1), meta={"kind": "one_missing"})
    combined, per_hop = traj(hop2, n_llm=1, sample=0), traj(hop2, n_llm=2, sample=1)
    short, long = traj(one, n_llm=1, sample=0), traj(one, n_llm=2, sample=1)
    everything = [combined, per_hop, short, long]
    with Store(db) as s:
        s.add_questions([hop2, one])
        s.add_trajectories(everything)
        s.add_judgments([r for t in everything for r in judge(t, 1.0)])
    sql = load_query("sft_candidates")
    assert set(run_sql(db, sql)["trajectory_id"]) == {per_hop.id, short.id}
    assert set(run_sql(db, sql, {"one_request_per_hop": ""})["trajectory_id"]) == {combined.id, short.id}
    assert set(run_sql(db, sql, {"one_request_per_hop": "two_hop,one_missing"})["trajectory_id"]) == {per_hop.id,
                                                                                                     long.id}


def test_sft_candidates_weigh_answering_alone_by_alone_dialogues(db):
    """A question answered without asking keeps `alone_dialogues` of its dialogues; a fraction keeps the next one
    for that share of the questions, the same ones on every call; a question that asks keeps one."""
    questions = [question(i) for i in range(40)]
    alone = [traj(q, n_llm=0, sample=k) for q in questions[:30] for k in range(3)]
    asked = [traj(q, n_llm=1, sample=k) for q in questions[30:] for k in range(2)]
    with Store(db) as s:
        s.add_questions(questions)
        s.add_trajectories(alone + asked)
        s.add_judgments([r for t in alone + asked for r in judge(t, 1.0)])
    sql = load_query("sft_candidates")

    def per_question(value):
        out = run_sql(db, sql, {"alone_dialogues": value})
        return out.group_by("question_id").len().sort("question_id").rows()

    assert sorted(n for _, n in per_question(1)) == [1] * 40
    assert sorted(n for _, n in per_question(2)) == [1] * 10 + [2] * 30
    half = per_question(1.5)
    two = {qid for qid, n in half if n == 2}
    assert 8 <= len(two) <= 22 and two <= {q.id for q in questions[:30]}  # about half of the 30, none that asked
    assert per_question(1.5) == half  # drawn by question id: the same questions every time
    assert {n for _, n in per_question(2.5)} == {1, 2, 3}


def test_rs_select_tie_breaking(db):
    q0, q1 = question(0), question(1)
    r1_fast = traj(q0, n_llm=1, round=1, sample=0)
    r1_slow = traj(q0, n_llm=2, round=1, sample=1)  # same reward, more turns
    r1_cheap = traj(q1, n_llm=1, round=1, sample=0, tokens=3)
    r1_dear = traj(q1, n_llm=1, round=1, sample=1, tokens=8)
    r1_low = traj(q1, n_llm=0, round=1, sample=2)  # below the threshold
    r2 = traj(q0, n_llm=1, round=2)
    ts = [r1_fast, r1_slow, r1_cheap, r1_dear, r1_low, r2]
    rewards = {r1_fast.id: 0.9, r1_slow.id: 0.9, r1_cheap.id: 0.8, r1_dear.id: 0.8, r1_low.id: 0.1, r2.id: 0.95}
    with Store(db) as s:
        s.add_questions([q0, q1])
        s.add_trajectories(ts)
        s.add_judgments([{"trajectory_id": k, "judge": "reward", "value": v} for k, v in rewards.items()])
    sql = load_query("rs_select")
    picked = run_sql(db, sql, {"round": 1})
    assert dict(zip(picked["question_id"], picked["trajectory_id"], strict=True)) == {q0.id: r1_fast.id,
                                                                                       q1.id: r1_cheap.id}
    assert run_sql(db, sql)["trajectory_id"].to_list() == [r2.id]  # default: the latest round
    assert run_sql(db, sql, {"round": 1, "min_reward": 0.85})["trajectory_id"].to_list() == [r1_fast.id]
    # another RL run's round 1 in the same store (another policy sampled it): never mixed in when the policy is named
    other = Trajectory(q0.id, "dynamic", "other-policy", "llm-y", r1_fast.turns, final_answer=r1_fast.final_answer,
                       stop_reason="answer", format_ok=True, round=1)
    with Store(db) as s:
        s.add_trajectories([other])
        s.add_judgments([{"trajectory_id": other.id, "judge": "reward", "value": 1.5}])
    assert other.id in run_sql(db, sql, {"round": 1})["trajectory_id"].to_list()
    mine = run_sql(db, sql, {"round": 1, "policy": "slm-x"})
    assert dict(zip(mine["question_id"], mine["trajectory_id"], strict=True)) == {q0.id: r1_fast.id,
                                                                                   q1.id: r1_cheap.id}


def test_stats_query(db):
    ts = [traj(question(i), n_llm=i) for i in range(4)]
    with Store(db) as s:
        s.add_questions([question(i) for i in range(4)])
        s.add_trajectories(ts)
        s.add_judgments([r for i, t in enumerate(ts) for r in judge(t, float(i % 2), leak=float(i == 3))])
    row = run_sql(db, load_query("stats")).row(0, named=True)
    assert (row["source"], row["split"], row["strategy"], row["n"]) == ("geo", "train", "dynamic", 4)
    assert (row["em_pct"], row["avg_turns"], row["leak_pct"], row["format_ok_pct"]) == (50.0, 1.5, 25.0, 100.0)


def test_expert_replies_score_each_request_wording_against_the_fact_asked(db):
    """Replies are grouped by the request with the hop's subject masked; a reply is answered when it carries a gold
    alias of that hop; other splits and replies to requests that name no subject are left out."""
    import dataclasses

    from seekhelp.records import Turn

    def ask(q, request, reply, sample):
        t = traj(q, n_llm=0, sample=sample)
        t.turns[:0] = [Turn("slm", "x", "message", request, "think"),
                       Turn("llm", f"<information>{reply}</information>", "information", reply, sent=request)]
        return t

    hop = {"relation": "currency", "subject": "Peru", "answers": ["Sol", "Peruvian sol"], "object": "the Sol"}
    other = {"relation": "currency", "subject": "Chile", "answers": ["Peso"], "object": "the Peso"}
    q0 = dataclasses.replace(question(0, split="validation"), meta={"hops": [hop]})
    q1 = dataclasses.replace(question(1, split="validation"), meta={"hops": [other]})
    q2 = dataclasses.replace(question(2, split="test"), meta={"hops": [hop]})
    trajs = [ask(q0, "Which currency does Peru use?", "Peru uses the sol.", 0),
             ask(q0, "Which currency is legal tender in Peru?", "The dollar.", 1),
             ask(q1, "Which currency is legal tender in Chile?", "The Chilean peso (CLP).", 0),
             ask(q1, "Which currency is used there?", "The peso.", 1),
             ask(q2, "Which currency does Peru use?", "The dollar.", 0)]
    with Store(db) as s:
        s.add_questions([q0, q1, q2])
        s.add_trajectories(trajs)
    out = run_sql(db, load_query("expert_replies"))
    got = {(r["wording"], r["n"], r["answered_pct"]) for r in out.to_dicts()}
    assert got == {("Which currency is legal tender in {s}?", 2, 50.0), ("Which currency does {s} use?", 1, 100.0)}
    assert set(run_sql(db, load_query("expert_replies"), {"min_n": 2})["wording"]) == {
        "Which currency is legal tender in {s}?"}
    everywhere = run_sql(db, load_query("expert_replies"), {"split": "*"}).to_dicts()
    assert ("Which currency does {s} use?", 2, 50.0) in {(r["wording"], r["n"], r["answered_pct"]) for r in everywhere}
