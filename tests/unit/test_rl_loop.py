"""rl.loop end to end on a tiny random model: rounds, stored rollouts, SQL selection, retrain, resume."""

from pathlib import Path

import pytest

from rl.loop import LLMEndpoint, RLRecipe, run
from seekhelp.records import Question
from seekhelp.store import Store

ROOT = Path(__file__).resolve().parents[2]
CITIES = [("Lyon", "France"), ("Porto", "Portugal"), ("Graz", "Austria"), ("Turku", "Finland"), ("Cork", "Ireland"),
          ("Bern", "Switzerland"), ("Gent", "Belgium"), ("Split", "Croatia")]


def _questions() -> list[Question]:
    return [Question(question=f"My friend number {i} lives in {city}. Which country does my friend live in?",
                     answers=[country], privacy_items=[f"The user's friend number {i} lives in {city}."],
                     source="geo", split="train" if i < 6 else "validation")
            for i, (city, country) in enumerate(CITIES)]


def _recipe(tmp_path: Path, model: str, **kw) -> RLRecipe:
    store = tmp_path / "store.duckdb"
    if not store.exists():
        with Store(store) as s:
            s.add_questions(_questions())
    base = dict(store=str(store), init_model=model, output_dir=str(tmp_path / "rl"),
                sft_recipe=str(ROOT / "sft/recipes/smollm2-135m/demo.yaml"),
                sft_overrides=["--max_steps", "1", "--per_device_train_batch_size", "2", "--disable_tqdm", "true"],
                rounds=1, k=2, train_questions=6, validation_questions=2, easy_k=1, slm_max_new_tokens=12,
                llm_max_new_tokens=8, n_max=2, min_reward=-100.0, batch_size=8,
                llm=LLMEndpoint(kind="local", model=model, ground=False), control=False)
    return RLRecipe(**(base | kw))


def _count(store: str, sql: str) -> int:
    with Store(store, read_only=True) as s:
        return int(s.sql(sql).to_series()[0])


def test_one_round_samples_selects_retrains_and_resumes(tiny_model_dir, tmp_path):
    recipe = _recipe(tmp_path, tiny_model_dir)
    rows = run(recipe)
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[0]["n_rollouts"] == 0 and rows[0]["n"] == 2
    # 6 questions x k=2 rollouts; min_reward -100 keeps the best one of each question
    assert rows[1]["n_rollouts"] == 12 and rows[1]["n_selected"] == 6
    for r in rows:
        assert 0.0 <= r["valid_rate"] <= 1.0 and 0.0 <= r["leak_rate"] <= 1.0
        # no question has a kind: all of them need a fact, none is self-contained
        assert r["n_self_contained"] == 0 and r["calls_self_contained"] is None and r["em_needs_fact"] == r["em"]
    assert (tmp_path / "rl" / "round-1" / "config.json").exists()
    assert (tmp_path / "rl" / "round-1-data").is_dir()
    n_traj = _count(recipe.store, "SELECT count(*) FROM trajectories WHERE round = 1")
    assert n_traj == 12 + 2  # rollouts + validation of the new policy
    # every rollout carries its reward and each component
    assert _count(recipe.store, "SELECT count(*) FROM scored WHERE round = 1 AND reward IS NOT NULL") == n_traj
    # easy is per policy: round 0 on 6 train + 2 validation questions, round 1 on the 2 validation ones
    assert _count(recipe.store, "SELECT count(*) FROM easy") == 10

    walls = [r["wall_s"] for r in rows]
    again = run(recipe)  # resume: both rounds finished, nothing sampled or trained again
    assert [r["wall_s"] for r in again] == walls
    assert _count(recipe.store, "SELECT count(*) FROM trajectories WHERE round = 1") == n_traj


def test_a_round_with_nothing_above_the_threshold_keeps_the_policy(tiny_model_dir, tmp_path):
    recipe = _recipe(tmp_path, tiny_model_dir, min_reward=100.0, k=1)
    rows = run(recipe)
    assert rows[1]["n_selected"] == 0 and rows[1]["n_rollouts"] == 6
    kept = tmp_path / "rl" / "round-1" / "model.safetensors"
    assert kept.read_bytes() == (Path(tiny_model_dir) / "model.safetensors").read_bytes()


def _add_teacher_dialogues(store: str, n: int) -> list:
    """Teacher dialogues (correct, one request) for the first n training questions."""
    from seekhelp.records import Trajectory, Turn

    teacher = []
    for q in [q for q in _questions() if q.split == "train"][:n]:
        msg = f"Which country is {q.question.split(' lives in ')[1].split('.')[0]} in?"
        turns = [Turn("slm", f"<think>I need the country.</think>\n<message>{msg}</message>", "message", msg,
                      "I need the country."),
                 Turn("llm", f"<information>{q.answers[0]}.</information>", "information", f"{q.answers[0]}.",
                      sent=msg),
                 Turn("slm", f"<think>So {q.answers[0]}.</think>\n<answer>{q.answers[0]}</answer>", "answer",
                      q.answers[0], f"So {q.answers[0]}.")]
        teacher.append(Trajectory(q.id, "teacher", "teacher-kb", "teacher-kb", turns, final_answer=q.answers[0],
                                  stop_reason="answer", format_ok=True))
    with Store(store) as s:
        s.add_trajectories(teacher)
        s.add_judgments([{"trajectory_id": t.id, "judge": "em", "value": 1.0} for t in teacher])
    return teacher


@pytest.mark.parametrize("validate", [True, False])
def test_control_arm_trains_as_many_teacher_dialogues_from_the_same_start(tiny_model_dir, tmp_path, validate,
                                                                          monkeypatch):
    """The control: after the RL rounds, SFT continued from init_model on teacher dialogues of each round's questions,
    as many as the RL round trained on; validated on the same questions and its best round kept (or, without
    validation, trained up to the round RL kept, which is its final)."""

    recipe = _recipe(tmp_path, tiny_model_dir, min_reward=-100.0, k=1, fallback_query="sft_candidates",
                     control=True, control_validate=validate)
    if not validate:  # RL keeps round 1 whatever the validation says, so the control trains round 1 too
        from rl.rounds import RoundRunner

        monkeypatch.setattr(RoundRunner, "choose_final", lambda self: self.write_final(1, "test"))
    _check_control(recipe, tmp_path, validate)


def _check_control(recipe, tmp_path, validate):
    import json

    teacher = _add_teacher_dialogues(recipe.store, 3)
    rows = run(recipe)
    n_rl = rows[1]["n_selected"] + rows[1]["n_fallback"]
    assert n_rl == 6  # one pick per training question (min_reward -100)
    ctl = tmp_path / "rl" / "control"
    data = json.loads((ctl / "round-1-data" / "provenance.json").read_text())
    assert data["selection"] == "control" and data["rl_dialogues"] == 6 and data["fallback"] == 3  # only 3 exist
    from seekhelp.store.export import read_export

    assert sorted(read_export(ctl / "round-1-data")["trajectory_id"]) == sorted(t.id for t in teacher)
    assert (ctl / "round-1" / "config.json").exists()
    with Store(recipe.store, read_only=True) as s:
        got = s.sql("SELECT run, round, n_rollouts, n_fallback, mean_reward FROM rl_rounds ORDER BY run, round")
    by = {(r["run"], r["round"]): r for r in got.to_dicts()}
    assert by[(str(ctl), 0)]["mean_reward"] == by[(recipe.output_dir, 0)]["mean_reward"]  # the same SFT start
    assert by[(str(ctl), 1)]["n_rollouts"] == 0 and by[(str(ctl), 1)]["n_fallback"] == 3
    assert (by[(str(ctl), 1)]["mean_reward"] is None) == (not validate)
    finals = {}
    for folder in (tmp_path / "rl", ctl):
        finals[folder] = json.loads((folder / "final.json").read_text())
        assert finals[folder]["round"] in (0, 1) and (Path(finals[folder]["checkpoint"]) / "config.json").exists()
    if not validate:
        assert finals[ctl]["round"] == finals[tmp_path / "rl"]["round"] == 1
    from seekhelp.evaluation.endpoints import resolve_slm

    assert resolve_slm(str(tmp_path / "rl" / "final")) == json.loads((tmp_path / "rl" / "final.json").read_text())[
        "checkpoint"]
    assert resolve_slm(str(tmp_path / "rl" / "latest")) == str(tmp_path / "rl" / "round-1")


def test_final_is_the_best_round_on_validation(tmp_path):
    """choose_final: best validation mean reward, then EM, then the earlier round; round 0 (the SFT start) can win."""
    import json

    from rl.rounds import RL_ROUNDS_DDL, RoundRunner

    recipe = RLRecipe(store=str(tmp_path / "s.duckdb"), init_model="sft-model", output_dir=str(tmp_path / "rl"))
    runner = RoundRunner.__new__(RoundRunner)
    runner.recipe, runner.control = recipe, False
    with Store(recipe.store) as store:
        store.execute(RL_ROUNDS_DDL)
        for r, reward, em in [(0, 0.40, 0.6), (1, 0.35, 0.7), (2, 0.40, 0.6)]:
            store.execute("INSERT INTO rl_rounds (run, round, split, n, mean_reward, em) VALUES (?, ?, ?, ?, ?, ?)",
                          [recipe.output_dir, r, "validation", 24, reward, em])
        runner.store = store
        final = runner.choose_final()
    assert final["round"] == 0 and final["checkpoint"] == "sft-model"
    assert json.loads((tmp_path / "rl" / "final.json").read_text())["round"] == 0


def test_control_and_fallback_dialogues_are_teacher_dialogues_never_rollouts(tmp_path):
    """A correct RL rollout answered without asking beats a teacher dialogue of the same question on the SFT query's
    fewest-turns ranking; the control arm and the fallbacks must still read the teacher's (no policy sampling)."""
    from rl.rounds import RoundRunner
    from seekhelp.records import Trajectory, Turn

    recipe = _recipe(tmp_path, "unused", fallback_query="sft_candidates")
    teacher = _add_teacher_dialogues(recipe.store, 3)
    q = teacher[0].question_id
    answer = teacher[0].final_answer
    rollout = Trajectory(q, "dynamic", "rl/round-1", "llm", [Turn("slm", f"<answer>{answer}</answer>", "answer",
                                                                  answer)],
                         final_answer=answer, stop_reason="answer", format_ok=True, round=1)
    with Store(recipe.store) as s:
        s.add_trajectories([rollout])
        s.add_judgments([{"trajectory_id": rollout.id, "judge": "em", "value": 1.0}])
    from seekhelp.store.query import load_query, run_sql

    everything = run_sql(recipe.store, load_query("sft_candidates"), {"split": "train"})
    assert rollout.id in everything["trajectory_id"].to_list()  # what the rounds read before: the rollout wins
    runner = RoundRunner.__new__(RoundRunner)
    runner.recipe = recipe
    ids = runner.teacher_dialogues()["trajectory_id"].to_list()
    assert sorted(ids) == sorted(t.id for t in teacher)


def test_the_kept_round_carries_its_paired_difference_from_round_0(tmp_path):
    """choose_final pairs each round's validation reward with round 0's question by question (its own run's
    validation trajectories only: not the training rollouts, not another run's) and writes the kept round's
    difference and bootstrap interval into final.json."""
    import json

    from rl.rounds import RL_ROUNDS_DDL, RoundRunner

    recipe = RLRecipe(store=str(tmp_path / "s.duckdb"), init_model="sft-model", output_dir=str(tmp_path / "rl"))
    runner = RoundRunner.__new__(RoundRunner)
    runner.recipe, runner.control = recipe, False
    rewards = {0: [0.0, 0.5, 1.0, 0.0], 1: [0.5, 0.5, 1.0, 0.5]}  # round 1 is +0.5 on two questions, equal on two
    with Store(recipe.store) as store:
        store.execute(RL_ROUNDS_DDL)
        for i in range(4):
            store.execute("INSERT INTO questions (id, question, split) VALUES (?, ?, 'validation')", [f"v{i}", "q"])
        store.execute("INSERT INTO questions (id, question, split) VALUES ('t0', 'q', 'train')")
        for r, values in rewards.items():
            store.execute("INSERT INTO rl_rounds (run, round, split, n, mean_reward, em) VALUES (?, ?, ?, ?, ?, ?)",
                          [recipe.output_dir, r, "validation", 4, sum(values) / 4, 0.5])
            rows = [(f"r{r}v{i}", f"v{i}", runner.run_id(r), v) for i, v in enumerate(values)]
            rows += [(f"r{r}t0", "t0", runner.run_id(r), -5.0),  # a training rollout of the round
                     (f"x{r}v0", "v0", "rl-other-r1", 9.0)]  # another run's episode of the same question
            for tid, qid, run_id, value in rows:
                store.execute("INSERT INTO trajectories (id, question_id, round, run_id) VALUES (?, ?, ?, ?)",
                              [tid, qid, r, run_id])
                store.execute("INSERT INTO judgments (trajectory_id, judge, value) VALUES (?, 'reward', ?)",
                              [tid, value])
        runner.store = store
        final = runner.choose_final()
    assert final["round"] == 1
    vs = json.loads((tmp_path / "rl" / "final.json").read_text())["vs_round_0"]
    assert vs["n"] == 4 and vs["diff"] == pytest.approx(0.25)
    assert 0.0 <= vs["ci"][0] <= 0.25 <= vs["ci"][1] <= 0.5


def test_questions_no_rollout_solved_fall_back_to_their_sft_dialogue(tiny_model_dir, tmp_path):
    """Nothing reaches min_reward, so with `fallback_query` each training question of the round that has a teacher
    dialogue in the SFT selection is retrained on it (questions without one add nothing), and the round says so."""
    recipe = _recipe(tmp_path, tiny_model_dir, min_reward=100.0, k=1, fallback_query="sft_candidates")
    teacher = _add_teacher_dialogues(recipe.store, 4)
    rows = run(recipe)
    assert (rows[1]["n_selected"], rows[1]["n_fallback"]) == (0, 4)
    kept = tmp_path / "rl" / "round-1" / "model.safetensors"
    assert kept.read_bytes() != (Path(tiny_model_dir) / "model.safetensors").read_bytes()  # it did retrain
    import json

    from seekhelp.store.export import read_export

    assert sorted(read_export(tmp_path / "rl" / "round-1-data")["trajectory_id"]) == sorted(t.id for t in teacher)
    how = json.loads((tmp_path / "rl" / "round-1-data" / "provenance.json").read_text())
    assert (how["picks"], how["fallback"], how["failed_questions"]) == (0, 4, 6)


@pytest.mark.parametrize("bad, msg", [("llm.kind=ollama", "llm.kind"), ("init_model=/nonexistent", "init_model"),
                                      ("policy.kind=sglang", "policy.kind"), ("retrain.launcher=slurm", "retrain"),
                                      ("retrain.launcher=accelerate", "retrain.accelerate_config")])
def test_bad_recipe_is_one_line(tmp_path, tiny_model_dir, bad, msg, capsys):
    from rl.loop import main

    recipe = _recipe(tmp_path, tiny_model_dir)
    import yaml

    cfg = tmp_path / "rl.yaml"
    from seekhelp.config import to_dict

    d = to_dict(recipe) | {"retrain": {"accelerate_config": str(tmp_path / "missing.yaml")}}
    cfg.write_text(yaml.safe_dump(d))
    assert main(["--config", str(cfg), "--set", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and msg in err[0]


def test_retrain_keeps_the_sft_effective_batch(tmp_path):
    from rl.policy import RetrainConfig, batch_args
    from seekhelp.config import RecipeError

    sft = tmp_path / "sft.yaml"
    sft.write_text("per_device_train_batch_size: 4\ngradient_accumulation_steps: 4\n")
    eight = RetrainConfig(launcher="accelerate", num_processes=8, sft_processes=8)
    assert batch_args(str(sft), [], eight) == ["--gradient_accumulation_steps", "4"]  # 4 x 4 x 8 = 128
    # one in-process retrain of a recipe made for 8 GPUs: 32 accumulation steps, not a batch of 16
    assert batch_args(str(sft), [], RetrainConfig(sft_processes=8)) == ["--gradient_accumulation_steps", "32"]
    assert batch_args(str(sft), ["--per_device_train_batch_size", "8"], eight)[-1] == "2"
    assert batch_args(str(sft), ["--gradient_accumulation_steps", "1"], eight) == []  # the overrides decide
    with pytest.raises(RecipeError, match="effective batch 128"):
        batch_args(str(sft), ["--per_device_train_batch_size", "48"], eight)


def test_each_round_draws_the_next_slice_of_the_train_split():
    from types import SimpleNamespace

    from rl.rounds import RoundRunner

    runner = RoundRunner.__new__(RoundRunner)  # the slicing needs only the pool and the recipe
    runner.train_pool = [Question(question=f"q{i}", answers=["a"], split="train") for i in range(5)]
    runner.recipe = SimpleNamespace(train_questions=2)
    picks = [[q.question for q in runner.train_questions(r)] for r in (1, 2, 3, 4)]
    assert picks == [["q0", "q1"], ["q2", "q3"], ["q4", "q0"], ["q1", "q2"]]
    runner.recipe = SimpleNamespace(train_questions=9)  # more than the split holds: each round takes all of it
    assert len(runner.train_questions(2)) == 5


def test_a_slice_of_a_split_holds_every_kind_alike(tmp_path):
    """validation_questions / train_questions take kinds in turn, so 8 of 3 kinds are not 8 of the first kind."""
    from types import SimpleNamespace

    from rl.rounds import RoundRunner
    from seekhelp.store import Store

    kinds = ["self_contained"] * 6 + ["one_missing"] * 6 + ["two_hop"] * 6 + [None] * 2
    qs = [Question(question=f"q{i}", answers=["a"], split="validation", meta={"kind": k} if k else {})
          for i, k in enumerate(kinds)]
    runner = RoundRunner.__new__(RoundRunner)
    runner.recipe = SimpleNamespace(source=None)
    with Store(tmp_path / "s.duckdb") as runner.store:
        runner.store.add_questions(qs)
        first = runner._questions("validation", 8)
    got = [q.meta.get("kind") for q in first]
    assert sorted(got, key=str) == sorted(["self_contained", "one_missing", "two_hop", None] * 2, key=str)
    assert len({q.id for q in first}) == 8


def test_a_seeded_run_samples_its_own_rollouts_and_retrains_with_its_seed(tiny_model_dir, tmp_path, monkeypatch):
    """seed 0 keeps the recipe's own seeds; a nonzero seed samples other rollouts (new trajectory ids, other text)
    and passes `--seed` to the retrain (RL's and the control's), which is what rl.seeds varies. Two runs in one store
    from one SFT model never pick each other's rollouts."""
    import shutil

    import rl.policy
    from rl.loop import policy_label
    from rl.rounds import RoundRunner
    from seekhelp.store.export import read_export

    seen = []

    def fake_sft(retrain, args):  # the retrain's flags; the "trained" model is the start copied
        seen.append(args)
        out = args[args.index("--output_dir") + 1]
        shutil.copytree(args[args.index("--model_name_or_path") + 1], out, dirs_exist_ok=True)

    monkeypatch.setattr(rl.policy, "run_sft", fake_sft)
    monkeypatch.setattr(RoundRunner, "choose_final", lambda self: self.write_final(1, "test"))  # the control trains
    texts, picked = {}, {}
    for seed in (0, 7):
        recipe = _recipe(tmp_path, tiny_model_dir, seed=seed, output_dir=str(tmp_path / f"rl-{seed}"), k=2,
                         temperature=1.0, control=True, control_validate=False, fallback_query="sft_candidates")
        if seed == 0:
            _add_teacher_dialogues(recipe.store, 3)  # the control's dialogues
        run(recipe)
        with Store(recipe.store, read_only=True) as s:
            texts[seed] = {r["id"]: r["text"] for r in s.sql(
                "SELECT t.id, string_agg(u.raw, '|' ORDER BY u.idx) AS text FROM trajectories t JOIN turns u "
                "ON u.trajectory_id = t.id WHERE t.round = 1 AND t.slm = $slm GROUP BY t.id",
                {"slm": policy_label(recipe, 0)}).to_dicts()}
        picked[seed] = set(read_export(tmp_path / f"rl-{seed}" / "round-1-data")["trajectory_id"])
    assert len(texts[0]) == len(texts[7]) == 12 and not set(texts[0]) & set(texts[7])  # 6 questions x K=2 each
    assert sorted(texts[0].values()) != sorted(texts[7].values())
    assert len(picked[7]) == 6 and picked[7] <= set(texts[7]) and picked[0] <= set(texts[0])
    flags = [a[a.index("--seed") + 1] if "--seed" in a else None for a in seen]
    assert flags == [None, None, "7", "7"]  # RL round 1 and its control, for each seed


def test_runs_in_folders_of_one_name_keep_their_own_labels_and_run_ids(tmp_path):
    from rl.loop import policy_label
    from rl.rounds import RoundRunner

    a, b = (_recipe(tmp_path, "m", output_dir=str(tmp_path / d / "seed-1")) for d in ("seeds", "seeds-lr"))
    for r in (0, 1, 2):
        assert policy_label(a, r) != policy_label(b, r)
        assert RoundRunner(a).run_id(r) != RoundRunner(b).run_id(r)
        assert RoundRunner(a).run_id(r).startswith("rl-seed-1-")
