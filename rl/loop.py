"""`make rl`: rounds of rejection-sampling RL — sample, reward, select (SQL), retrain — from the SFT model.

    python -m rl.loop --config rl/recipes/smollm2-135m/demo.yaml [--set rounds=3 ...]

Round r: K rollouts per training question with the current SLM against the LLM endpoint (one batched runtime
call per sample index), judged and rewarded with the paper's reward, stored with the round number; the SQL in
`rs_select.sql` keeps the best rollout per question above a threshold (a question with none falls back to its
`fallback_query` dialogue, the SFT selection); `sft.train` continues from the previous
checkpoint on that selection; the new policy is scored on the validation split and a row goes to `rl_rounds`.
Resumable: finished rounds (checkpoint + `rl_rounds` row) and stored rollouts are skipped on a rerun.
"""

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rl.policy import PolicyConfig, RetrainConfig, check
from seekhelp.config import RecipeError, load_recipe
from seekhelp.errors import entry_point

log = logging.getLogger("rl.loop")


@dataclass
class LLMEndpoint:
    kind: str = "openai"  # openai: an OpenAI-compatible endpoint; local: `model` generated in-process, batched
    base_url: str | None = None  # openai without base_url: start `transformers serve` on `model` for the run
    model: str = "smollm2-135m"
    ground: bool = True  # give the LLM retrieved knowledge-base facts (offline "grounded expert")
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never stored
    max_concurrency: int = 16  # requests in flight to this LLM (size it to the server: a 235B TP=8 vLLM takes 256+)
    extra_body: dict | None = None  # fields beside the OpenAI ones, e.g. {top_k: -1} (see EndpointConfig.extra_body)


@dataclass
class RLRecipe:
    store: str = "data/store.duckdb"
    init_model: str = "data/models/sft/smollm2-135m-demo"
    output_dir: str = "data/models/rl/smollm2-135m-demo"
    sft_recipe: str = "sft/recipes/smollm2-135m/demo.yaml"
    sft_overrides: list[str] = field(default_factory=list)  # extra `--key value` pairs for sft.train
    rounds: int = 2
    k: int = 2  # rollouts per question per round
    train_questions: int = 64
    validation_questions: int = 40
    source: str | None = None  # restrict questions to one source (None: all)
    temperature: float = 0.8
    # the run's seed: round r samples its rollouts with seed + 1000 r, and a nonzero seed is every retrain's (RL and
    # control) `--seed` too; 0 keeps the SFT recipe's. `python -m rl.seeds` reads RL and its control over seeds
    seed: int = 0
    alpha: float = 0.5
    beta: float = 0.2
    n_max: int = 4
    easy_k: int = 2  # SLM-alone samples per question for the "easy" estimate
    min_reward: float = 0.5
    # a training question none of whose K rollouts reached min_reward is retrained on this query's dialogue of it
    # (the SFT selection: a teacher dialogue); None: picks only
    fallback_query: str | None = None
    slm_max_new_tokens: int = 96
    llm_max_new_tokens: int = 96
    batch_size: int = 32
    llm: LLMEndpoint = field(default_factory=LLMEndpoint)
    hub_model_id: str | None = None  # `make push` / seekhelp.hub: round-N is pushed as revision round-N
    # the control arm: after the RL rounds, SFT continued from init_model on teacher dialogues of each round's
    # questions, as many as that RL round trained on (same steps, no policy sampling); it goes to
    # <output_dir>/control/round-N. RL earns its place only if it beats this at equal compute (the eval's paired
    # comparison). control_validate: every control round is validated and the best is kept, as for RL; false: the
    # control is trained up to the round RL kept and that round is its final (same steps, no validation cost)
    control: bool = True
    control_validate: bool = True
    report_to: str = "none"  # none | trackio | wandb: each round's row, and the retrains' losses (seekhelp.tracking)
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # how rollouts are sampled (rl/policy.py)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)  # how each round retrains (rl/policy.py)


def policy_label(recipe: RLRecipe, r: int) -> str:
    """The name round r's policy samples and is scored under: the run's output_dir and the round, round 0 (the SFT
    start) included. Rollout ids, the rollout selection (`rs_select.sql`'s `$policy`) and the `easy` flags are keyed
    by it, so two runs sharing a store never share any of them: not two `rl.seeds` seeds that start from one SFT model
    (round 1 used to pick among every seed's rollouts of that model), not two runs in folders of one name."""
    return f"{recipe.output_dir}/round-{r}"


def checkpoint(recipe: RLRecipe, r: int) -> Path:
    return Path(recipe.init_model) if r == 0 else Path(recipe.output_dir) / f"round-{r}"


def round_done(store, recipe: RLRecipe, r: int) -> bool:
    ok = store.sql("SELECT count(*) AS n FROM rl_rounds WHERE run = $run AND round = $r",
                   {"run": recipe.output_dir, "r": r})["n"][0] > 0
    return ok and (r == 0 or (checkpoint(recipe, r) / "config.json").exists())


@entry_point
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="rl/recipes/smollm2-135m/demo.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    recipe = load_recipe(RLRecipe, args.config, args.set)
    if not (Path(recipe.init_model) / "config.json").exists():
        raise RecipeError(f"init_model: {recipe.init_model} is not a model folder (run `make sft` first)")
    if recipe.llm.kind not in ("openai", "local"):
        raise RecipeError(f"llm.kind: {recipe.llm.kind!r} is not one of openai, local")
    check(recipe.policy, recipe.retrain)
    from seekhelp.tracking import check_report_to

    check_report_to(recipe.report_to)
    if not Path(recipe.store).exists():
        raise RecipeError(f"store: {recipe.store} not found (run `make data` first)")
    table = run(recipe)
    print(json.dumps(table))
    return 0


def track(tracker, rows: list[dict], r: int, arm: str) -> None:
    """Round r's row to the experiment tracker (keys "<arm>/<column>", the round as the step)."""
    if tracker:
        for row in rows:
            if row["round"] == r:
                tracker.log({f"{arm}/{k}": v for k, v in row.items() if k != "round"}, step=r)


def run(recipe: RLRecipe) -> list[dict]:
    from rl.rounds import RoundRunner

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.perf_counter()
    from seekhelp.config import to_dict
    from seekhelp.tracking import start

    tracker = start(recipe.report_to, f"rl-{Path(recipe.output_dir).name}", to_dict(recipe))
    with RoundRunner(recipe) as runner:
        for r in range(0, recipe.rounds + 1):  # round 0: the SFT model's validation row
            runner.ensure_round(r)
            track(tracker, runner.table(), r, "rl")
        rows = runner.table()
        final = runner.choose_final()
        control_rows = []
        if recipe.control:
            arm = runner.control_arm()
            for r in range(0, (recipe.rounds if recipe.control_validate else final["round"]) + 1):
                arm.ensure_round(r)
                track(tracker, arm.table(), r, "control")
            control_rows = arm.table()
            if recipe.control_validate:
                arm.choose_final()
            else:
                arm.write_final(final["round"], "the round RL kept (same steps as the RL final)")
    runner.print_table(rows)
    if control_rows:
        runner.print_table(control_rows, "Control: SFT continued on teacher dialogues, same steps (validation split)")
    log.info("final RL model: round %d (%s)", final["round"], final["checkpoint"])
    if tracker:
        tracker.log({"rl/final_round": final["round"]})
        tracker.finish()
    log.info("RL finished in %.1f s", time.perf_counter() - t0)
    return rows


if __name__ == "__main__":
    sys.exit(main())
