"""One RL round at a time: sampling, rewarding, selecting, retraining and validating (used by rl/loop.py)."""

import contextlib
import logging
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rl.round_table import COLUMNS, KIND_COLUMNS, RL_ROUNDS_DDL, kind_columns, paired_difference, validation_rewards  # noqa: F401  (re-exported)
from seekhelp.records import Question, trajectory_id
from seekhelp.rewards import RewardConfig, compute_reward, estimate_easy

log = logging.getLogger("rl.rounds")

def tracking_args(report_to: str) -> list[str]:
    """The retrain's SFT flags for the recipe's `report_to` (the same project as the RL rows)."""
    import os

    if report_to == "none":
        return []
    return ["--report_to", report_to, "--project", os.environ.get("SEEKHELP_TRACKING_PROJECT", "seekhelp")]


class RoundRunner:
    def __init__(self, recipe, control: bool = False):
        self.recipe = recipe
        self.control = control  # the control arm: same questions, teacher dialogues, no policy sampling
        self.reward_cfg = RewardConfig(alpha=recipe.alpha, beta=recipe.beta, n_max=recipe.n_max)
        self._stack = contextlib.ExitStack()
        self._policy = None  # (round, backend)
        from rl.policy import PolicySampler

        self.sampler = PolicySampler(recipe.policy, recipe.batch_size)

    # ------------------------------------------------------------------------------------------- set-up
    def __enter__(self) -> "RoundRunner":
        from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
        from seekhelp.store import Store

        r = self.recipe
        self.store = self._stack.enter_context(Store(r.store))
        self.store.execute(RL_ROUNDS_DDL)
        if r.llm.kind == "local":  # no HTTP: one batched generate per LLM step (the CPU demo)
            from seekhelp.backends.local import TransformersBackend

            self.llm = TransformersBackend(r.llm.model, max_batch_size=r.batch_size)
        elif r.llm.base_url:
            self.llm = OpenAIBackend(EndpointConfig(base_url=r.llm.base_url, model=r.llm.model,
                                                    api_key_env=r.llm.api_key_env, extra_body=r.llm.extra_body,
                                                    max_concurrency=r.llm.max_concurrency))
        else:
            from seekhelp.backends.server import serve

            srv = self._stack.enter_context(serve(r.llm.model))
            self.llm = OpenAIBackend(EndpointConfig(base_url=srv.base_url, model=srv.model, label=srv.label,
                                                    max_concurrency=r.llm.max_concurrency))
        if isinstance(self.llm, OpenAIBackend):  # one real call before any rollout: a wrong URL or id stops here
            from seekhelp.backends.openai_compat import EndpointError

            try:
                log.info("%s", self.llm.check())
            except EndpointError as e:
                self._stack.close()
                raise EndpointError(f"llm: {e}") from e
        self.grounder = None
        if r.llm.ground:
            from seekhelp.knowledge import KnowledgeBase, grounder

            self.grounder = grounder(KnowledgeBase.from_geonames(), k=3)
        self.train_pool = self._questions("train", 1 << 31)  # every round draws its own slice (train_questions)
        self.val_qs = self._questions("validation", r.validation_questions)
        if not self.train_pool or not self.val_qs:
            raise FileNotFoundError(f"{r.store}: no train/validation questions (run `make data` first)")
        return self

    def __exit__(self, *exc) -> None:
        self.sampler.close()
        self._stack.close()

    def control_arm(self) -> "RoundRunner":
        """The control arm, sharing this runner's store, LLM, questions and sampler: its recipe writes to
        `<output_dir>/control` and starts from the same SFT model (see `selection`)."""
        import copy
        import dataclasses

        arm = copy.copy(self)
        arm.recipe = dataclasses.replace(self.recipe, output_dir=str(Path(self.recipe.output_dir) / "control"),
                                         hub_model_id=None)
        arm.control, arm._policy, arm.rl_dir = True, None, self.recipe.output_dir
        return arm

    def _questions(self, split: str, limit: int) -> list[Question]:
        # probe questions (pipelines.generate: injection.probes) are for the eval only
        where = "split = $split AND meta->>'probe' IS NULL" + (" AND source = $source" if self.recipe.source else "")
        params = {"split": split, "limit": limit} | ({"source": self.recipe.source} if self.recipe.source else {})
        # kinds take turns (the first n of a split hold every kind alike; a question without a kind is its own group)
        order = "row_number() OVER (PARTITION BY meta->>'kind' ORDER BY id), meta->>'kind', id"
        rows = self.store.sql(f"SELECT * FROM questions WHERE {where} ORDER BY {order} LIMIT $limit",
                              params).to_dicts()
        import json

        for row in rows:
            row["meta"] = json.loads(row["meta"]) if isinstance(row.get("meta"), str) else (row.get("meta") or {})
        return [Question.from_dict(row) for row in rows]

    def _backend(self, r: int):
        """The sampler of round r's checkpoint (in-process, served, or vLLM: `policy` in the recipe)."""
        from rl.loop import checkpoint, policy_label

        if self._policy and self._policy[0] == r:
            return self._policy[1]
        self._policy = None
        b = self.sampler.open(str(checkpoint(self.recipe, r)), policy_label(self.recipe, r))
        self._policy = (r, b)
        return b

    def _runtime(self, slm, temperature: float, seed: int | None):
        from seekhelp.runtime import Runtime, RuntimeConfig

        cfg = RuntimeConfig(n_max=self.recipe.n_max, slm_max_new_tokens=self.recipe.slm_max_new_tokens,
                            llm_max_new_tokens=self.recipe.llm_max_new_tokens, slm_temperature=temperature,
                            guard="off", seed=seed)  # training sees its own leaks so the reward can punish them
        return Runtime(slm, self.llm, cfg, grounder=self.grounder)

    def _episodes(self, rt, questions: list[Question], desc: str, **kw):
        """rt.run with a progress bar (episodes finished)."""
        from tqdm.auto import tqdm

        with tqdm(total=len(questions), desc=desc, unit="ep", leave=False) as bar:
            rt.progress = bar.update
            try:
                return rt.run(questions, "dynamic", **kw)
            finally:
                rt.progress = None

    def train_questions(self, r: int) -> list[Question]:
        """Round r's training questions: the next `train_questions` of the train split (kinds taking turns, each
        kind by id; wrapping around), so successive rounds see different questions until the split is used up."""
        pool, n = self.train_pool, min(self.recipe.train_questions, len(self.train_pool))
        start = ((r - 1) * n) % len(pool)
        return (pool[start:] + pool[:start])[:n]

    # ------------------------------------------------------------------------------------------- pieces
    def easy_flags(self, questions: list[Question], r: int) -> dict[str, bool]:
        """'Easy' = the policy of round r (the one being rewarded) alone answers correctly in most of easy_k samples:
        the paper's definition for the *current* policy, re-estimated each round (stored per policy, reused)."""
        import asyncio

        from rl.loop import policy_label
        from seekhelp.metrics import exact_match
        from seekhelp.runtime import RuntimeConfig
        from seekhelp.strategies import StrategyContext, run_strategy

        label = policy_label(self.recipe, r)
        known = {row["question_id"]: row["is_easy"] for row in self.store.sql(
            "SELECT question_id, is_easy FROM easy WHERE slm = $slm", {"slm": label}).to_dicts()}
        todo = [q for q in questions if q.id not in known]
        if todo:
            slm = self._backend(r)
            hits = {q.id: [] for q in todo}
            for i in range(self.recipe.easy_k):
                cfg = RuntimeConfig(slm_max_new_tokens=self.recipe.slm_max_new_tokens, slm_temperature=0.7, seed=i)
                ctx = StrategyContext(slm=slm, llm=self.llm, config=cfg, sample_index=i)
                for t, q in zip(asyncio.run(run_strategy("slm_cot", ctx, todo)), todo, strict=True):
                    hits[q.id].append(bool(exact_match(t.final_answer, q.answers)))
            rows = [{"question_id": qid, "slm": label, "k": len(h), "n_correct": sum(h), "is_easy": estimate_easy(h)}
                    for qid, h in hits.items()]
            self.store.add_easy(rows)
            known |= {row["question_id"]: row["is_easy"] for row in rows}
        return known

    def score(self, questions: list[Question], trajs, run_id: str, r: int) -> list[dict]:
        """Judge, reward and store trajectories of round r's policy; returns per-trajectory summaries."""
        from seekhelp.judging import deterministic_judgments, leaked_items, reward_judgments

        by_id = {q.id: q for q in questions}  # a question sampled K times is one question here
        easy = self.easy_flags(list(by_id.values()), r)
        judgments, out = [], []
        for t in trajs:
            q = by_id[t.question_id]
            leaked = bool(leaked_items(q, t))
            b = compute_reward(t, q.answers, leaked, bool(easy.get(q.id)), self.reward_cfg)
            judgments += deterministic_judgments(q, t) + reward_judgments(t.id, b)
            out.append({**b.to_dict(), "leak": leaked, "valid": t.format_ok, "question_id": q.id})
        self.store.add_trajectories(trajs, run_id)
        self.store.add_judgments(judgments, run_id)
        return out

    def rollouts(self, r: int, run_id: str) -> int:
        """K samples per training question with the round's starting policy, all in one batched runtime call (the
        K samples of a question decode side by side); skips stored ones."""
        rc, slm, questions = self.recipe, self._backend(r - 1), self.train_questions(r)
        rt = self._runtime(slm, rc.temperature, seed=rc.seed + 1000 * r)
        fp = rt.config.fingerprint()
        ids = {(q.id, i): trajectory_id(q.id, "dynamic", slm.name, self.llm.name, i, fp, r)
               for q in questions for i in range(rc.k)}
        stored = self.store.stored_ids("trajectories", ids.values())
        todo = [(q, i) for i in range(rc.k) for q in questions if ids[(q.id, i)] not in stored]
        log.info("round %d: %d rollouts (%d stored), K=%d", r, len(todo), len(ids) - len(todo), rc.k)
        if todo:
            qs = [q for q, _ in todo]
            self.score(qs, self._episodes(rt, qs, f"round {r} rollouts", sample_index=[i for _, i in todo], round=r),
                       run_id, r - 1)
        return len(ids)

    def validate(self, r: int, run_id: str) -> dict:
        import statistics as st

        slm = self._backend(r)
        rt = self._runtime(slm, 0.0, seed=0)
        rows = self.score(self.val_qs, self._episodes(rt, self.val_qs, f"round {r} validation", sample_index=0,
                                                      round=r), run_id, r)

        def mean(key):
            return round(st.fmean(float(x[key]) for x in rows), 4)

        return {"policy": slm.name, "n": len(rows), "mean_reward": mean("total"), "r_format": mean("r_format"),
                "r_quality": mean("r_quality"), "r_feedback": mean("r_feedback"), "r_privacy": mean("r_privacy"),
                "r_efficiency": mean("r_efficiency"), "em": mean("r_quality"), "turns": mean("n_turns"),
                "leak_rate": mean("leak"), "valid_rate": mean("valid"), **kind_columns(self.val_qs, rows)}

    def selection(self, r: int) -> tuple[list[str], dict]:
        """Round r's retraining dialogues: the best rollout per training question at or above min_reward
        (`rs_select.sql`), then, when the recipe names a `fallback_query`, that query's dialogue (the SFT selection:
        teacher dialogues) for each of the round's questions none of whose K rollouts got there. Returns the
        trajectory ids and how they were chosen (for the export's provenance)."""
        from rl.loop import policy_label
        from seekhelp.store.query import load_query, run_sql

        rc = self.recipe
        if self.control:
            return self.control_selection(r)
        params = {"round": r, "min_reward": rc.min_reward, "split": "train", "policy": policy_label(rc, r - 1)}
        picked = run_sql(rc.store, load_query("rs_select"), params)
        ids = picked["trajectory_id"].to_list()
        how = {"selection": "rs_select", "selection_params": params, "picks": len(ids), "fallback_query":
               rc.fallback_query, "fallback": 0}
        if not rc.fallback_query:
            return ids, how
        have = set(picked["question_id"].to_list())
        failed = {q.id for q in self.train_questions(r)} - have
        cand = self.teacher_dialogues()
        extra = [t for t, qid in zip(cand["trajectory_id"], cand["question_id"], strict=True) if qid in failed]
        log.info("round %d: %d picks, %d of %d failed questions from %s", r, len(ids), len(extra), len(failed),
                 rc.fallback_query)
        return ids + extra, how | {"fallback": len(extra), "failed_questions": len(failed)}

    def teacher_dialogues(self):
        """The fallback query's dialogue per training question (`sft_candidates` by default), among the data stage's
        teacher dialogues only: the store also holds every RL rollout, and a correct rollout with fewer turns would
        otherwise win the query's ranking, which put the policy's own samples into the control arm (3 of its 16
        dialogues in the demo's round 2) and into the fallbacks. A query without `$strategy` ignores it."""
        from seekhelp.store.query import load_query, run_sql

        rc = self.recipe
        return run_sql(rc.store, load_query(rc.fallback_query or "sft_candidates"),
                       {"split": "train", "strategy": "teacher"})

    def control_selection(self, r: int) -> tuple[list[str], dict]:
        """The control's round r: teacher dialogues (the recipe's `fallback_query`, default sft_candidates) of the
        very questions RL round r trained on, as many as RL round r trained on, so both arms take the same optimizer
        steps from the same start; what differs is that RL's picks are the policy's own rollouts."""
        row = self.store.sql("SELECT n_selected + n_fallback AS n FROM rl_rounds WHERE run = $run AND round = $r",
                             {"run": self.rl_dir, "r": r}).to_dicts()
        if not row:
            raise RuntimeError(f"control round {r}: RL round {r} has not finished")
        n = int(row[0]["n"] or 0)
        order = {q.id: i for i, q in enumerate(self.train_questions(r))}
        cand = self.teacher_dialogues()
        pairs = sorted((order[qid], t) for t, qid in zip(cand["trajectory_id"], cand["question_id"], strict=True)
                       if qid in order)
        ids = [t for _, t in pairs][:n]
        (log.warning if len(ids) < n else log.info)(
            "control round %d: %d teacher dialogues (RL round %d trained on %d)", r, len(ids), r, n)
        return ids, {"selection": "control", "rl_dialogues": n, "picks": 0, "fallback": len(ids)}

    def retrain(self, r: int, run_id: str) -> tuple[int, int]:
        """Select and retrain; returns (picks trained on, fallback dialogues trained on)."""
        from rl.loop import checkpoint
        from rl.policy import batch_args, run_sft
        from seekhelp.prompts import load_prompt
        from seekhelp.store.export import export_sft

        rc = self.recipe
        export_dir = Path(rc.output_dir) / f"round-{r}-data"
        ids, how = self.selection(r)
        n_fallback = how["fallback"]
        ds = export_sft(rc.store, "SELECT unnest($ids::VARCHAR[]) AS trajectory_id", export_dir,
                        load_prompt("slm_dynamic"), params={"ids": ids}, provenance=how)
        if ds.num_rows == 0:
            log.warning("round %d: %s; keeping the previous policy", r, "no teacher dialogue of the round's "
                        "questions" if self.control else f"nothing above min_reward {rc.min_reward:.2f}")
            import shutil

            shutil.copytree(checkpoint(rc, r - 1), checkpoint(rc, r), dirs_exist_ok=True)
            return 0, 0
        self._policy = None
        self.sampler.close()  # the sampler's memory (a served or in-process engine) goes back to the trainer
        args = ["--config", rc.sft_recipe, "--store", "", "--dataset_path", str(export_dir),
                "--model_name_or_path", str(checkpoint(rc, r - 1)), "--output_dir", str(checkpoint(rc, r)),
                "--run_ids", run_id, *tracking_args(rc.report_to),
                *rc.sft_overrides, *batch_args(rc.sft_recipe, rc.sft_overrides, rc.retrain),
                *(["--seed", str(rc.seed)] if rc.seed else [])]
        run_sft(rc.retrain, args)
        return ds.num_rows - n_fallback, n_fallback

    # ------------------------------------------------------------------------------------------- driver
    def ensure_round(self, r: int) -> None:
        from rl.loop import round_done

        if round_done(self.store, self.recipe, r):
            log.info("round %d already finished; skipping", r)
            return
        if self.control and r == 0:  # the same SFT model, validated greedily on the same questions: RL's row
            cols = ", ".join(c for c in self.store.sql("SELECT * FROM rl_rounds LIMIT 0").columns if c != "run")
            self.store.execute(f"INSERT OR REPLACE INTO rl_rounds (run, {cols}) SELECT $ctl, {cols} FROM rl_rounds "
                               "WHERE run = $run AND round = 0", {"ctl": self.recipe.output_dir, "run": self.rl_dir})
            return
        t0 = time.perf_counter()
        from seekhelp.config import to_dict

        run_id = self.store.start_run("rl", {"recipe": to_dict(self.recipe), "round": r}, run_id=self.run_id(r))
        n_rollouts = n_selected = n_fallback = 0
        if r > 0:
            n_rollouts = 0 if self.control else self.rollouts(r, run_id)
            n_selected, n_fallback = self.retrain(r, run_id)
        if self.control and not self.recipe.control_validate:  # trained only; compared on test by the eval
            from rl.loop import policy_label

            row = {"policy": policy_label(self.recipe, r), "n": 0}
        else:
            row = self.validate(r, run_id)
        row |= {"run": self.recipe.output_dir, "round": r, "split": "validation", "n_rollouts": n_rollouts,
                "n_selected": n_selected, "n_fallback": n_fallback, "wall_s": round(time.perf_counter() - t0, 1)}
        cols = ", ".join(row)
        self.store.execute(f"INSERT OR REPLACE INTO rl_rounds ({cols}) VALUES ({', '.join('?' * len(row))})",
                           list(row.values()))
        self.store.finish_run(run_id, "ok")
        log.info("round %d: %s", r, row)

    def run_id(self, r: int) -> str:
        """Round r's run in `runs`: the folder's name for reading, a hash of its whole path so that two runs in
        folders of one name (`seeds/seed-1`, `seeds-lr/seed-1`) stay apart."""
        from seekhelp.records import content_hash

        od = self.recipe.output_dir
        return f"rl-{Path(od).name}-{content_hash(str(od), length=8)}-r{r}" + ("-control" if self.control else "")

    def against_start(self, r: int) -> dict | None:
        """Round r − round 0 in validation reward, paired by question (`rl.round_table.paired_difference`)."""
        return paired_difference(validation_rewards(self.store, self.run_id(r), r),
                                 validation_rewards(self.store, self.run_id(0), 0))

    def choose_final(self) -> dict:
        """The final model: the round with the best validation mean reward (then EM, then the earlier round), the SFT
        start (round 0) included; written to `<output_dir>/final.json`, which `.../final` resolves to, with the kept
        round's paired difference from round 0 (`vs_round_0`); every round's is logged."""
        rows = [x for x in self.table() if x["n"]]
        best = max(rows, key=lambda x: (x["mean_reward"], x["em"], -x["round"]))
        vs = {}
        for x in rows:
            if x["round"] > 0 and (d := self.against_start(x["round"])) is not None:
                vs[x["round"]] = d
                shown = "shown" if d["ci"][0] > 0 or d["ci"][1] < 0 else "no difference shown"
                log.info("round %d - round 0: validation reward %+.3f [%+.3f, %+.3f] over %d questions (%s)",
                         x["round"], d["diff"], *d["ci"], d["n"], shown)
        return self.write_final(best["round"], "validation mean_reward, then EM, then the earlier round", best,
                                vs.get(best["round"]))

    def write_final(self, r: int, chosen_by: str, row: dict | None = None, vs_round_0: dict | None = None) -> dict:
        import json

        from rl.loop import checkpoint

        row = row or {}
        out = {"round": r, "checkpoint": str(checkpoint(self.recipe, r)), "chosen_by": chosen_by,
               "mean_reward": row.get("mean_reward"), "em": row.get("em"), "validation_questions": row.get("n"),
               "vs_round_0": vs_round_0}
        path = Path(self.recipe.output_dir) / "final.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
        log.info("%s final: round %d (%s)", "control" if self.control else "RL", r, chosen_by)
        return out

    def table(self) -> list[dict]:
        return self.store.sql(f"SELECT {', '.join(COLUMNS)} FROM rl_rounds WHERE run = $run ORDER BY round",
                              {"run": self.recipe.output_dir}).to_dicts()

    @staticmethod
    def print_table(rows: list[dict], title: str = "RL rounds (validation split)") -> None:
        t = Table(*COLUMNS, title=title)
        for row in rows:
            t.add_row(*[f"{v:.3f}" if isinstance(v, float) else "–" if v is None else str(v)
                        for v in (row.get(c) for c in COLUMNS)])
        console = Console()
        if not console.is_terminal:  # logs and pipes: wide enough for every column and cell instead of 80 characters
            console = Console(width=max(220, Console(width=1000).measure(t).maximum))
        console.print(t)
