"""`make data`: seeds → privacy injection → teacher dialogues → judges → DuckDB store.

    python -m pipelines.generate --config pipelines/recipes/demo.yaml [--set teacher.samples=4 ...]

Everything is resumable through the store: ids are content hashes, questions and dialogues already stored are
skipped, and the run id is a hash of the recipe, so running the same recipe twice changes no row count.
"""

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from seekhelp.config import RecipeError, load_recipe, to_dict
from seekhelp.errors import entry_point
from seekhelp.records import Question, content_hash

log = logging.getLogger("pipelines.generate")


@dataclass
class HubSource:
    """One public set and where each of our splits comes from (see pipelines.seed_files.hub_split_seeds)."""

    name: str = ""  # a FlashRAG config name: nq, triviaqa, popqa, hotpotqa, 2wikimultihopqa, musique
    splits: dict = field(default_factory=dict)  # our split -> Hub split, e.g. {train: train, test: train}
    carve: dict = field(default_factory=dict)  # our split -> share of a Hub split it shares, e.g. {test: 0.05}
    limit: dict = field(default_factory=dict)  # our split -> at most this many (default: seeds.limit)


@dataclass
class SeedsConfig:
    kind: str = "offline"  # offline | hub | local
    n_per_split: dict = field(default_factory=lambda: {"train": 200, "validation": 40, "test": 40})
    sources: list[HubSource] = field(default_factory=list)  # hub
    hub_path: str | None = None  # hub: another repo, or a local folder in FlashRAG's layout (<set>/<split>.jsonl)
    hub_revision: str | None = None  # hub: a commit of the dataset repo to read (None: its newest; pin it for runs)
    split: str = "train"  # local: the split of the file's questions
    path: str | None = None  # local: a parquet/jsonl file
    limit: int | None = None  # hub: per split and source, unless the source says otherwise; local: in all
    seed: int = 0


@dataclass
class EndpointConfig:
    base_url: str | None = None  # none: start `transformers serve` on `model` (a registry name) for the run
    model: str = "smollm2-135m"
    api_key_env: str = "OPENAI_API_KEY"
    # teacher endpoints: requests in flight, and fields sent beside the OpenAI ones (e.g. a Qwen3 teacher:
    # {chat_template_kwargs: {enable_thinking: false}}, or its reasoning fires the stops and eats the token cap)
    max_concurrency: int = 16
    extra_body: dict | None = None


@dataclass
class InjectionConfig:
    kind: str = "offline"  # offline (deterministic, from the knowledge base) | llm (three distilabel steps + check)
    temperature: float = 0.7
    max_new_tokens: int = 256
    chunk_size: int = 256  # llm: seeds per distilabel run; each chunk is stored before the next starts (resume)
    # offline: probe sets, a sensitive detail -> splits, e.g. {id: [validation]}: every question of those splits
    # composed again with that detail (source <source>-probe-<detail>, meta.probe), for the eval only (not taught)
    probes: dict = field(default_factory=dict)
    # offline: one seen detail added, from a draw of its own, to a share of the questions of some kinds and splits
    # that drew none, e.g. {detail: id, share: 0.5, kinds: [underspecified], splits: [train]} (ExtraDetail)
    extra_detail: dict = field(default_factory=dict)


@dataclass
class TeacherConfig:
    kind: str = "knowledge"  # knowledge (gold decomposition) | runtime (teacher models in both roles)
    samples: int = 2
    temperature: float = 0.7
    n_max: int = 4
    slm: EndpointConfig | None = None
    llm: EndpointConfig | None = None
    slm_max_new_tokens: int = 256  # per SLM-role turn of a teacher dialogue
    llm_max_new_tokens: int = 256  # per LLM-role reply
    ground: bool = True
    splits: list[str] | None = None  # teach only questions of these splits (None: all); SFT reads train


@dataclass
class JudgeConfig:
    llm_judge: bool = True
    limit: int | None = 64  # LLM-judge at most this many dialogues that sent messages (None: all)
    max_new_tokens: int = 128
    timeout_s: int = 120  # seconds per call; a call still failing after max_retries is recorded in `failures`
    max_retries: int = 3
    chunk_size: int = 256  # dialogues per distilabel run; each chunk's verdicts are stored before the next starts


@dataclass
class RayConfig:
    address: str | None = None  # a running Ray head (e.g. 127.0.0.1:6379): run the distilabel DAGs there
    replicas: int = 1  # copies of each LLM step (and of the teacher step), one Ray actor (or process) each


@dataclass
class DataRecipe:
    store: str = "data/store.duckdb"
    shards: str = "data/shards"  # with ray.address: a folder every Ray node can write (shared filesystem)
    batch_size: int = 64
    seeds: SeedsConfig = field(default_factory=SeedsConfig)
    injection: InjectionConfig = field(default_factory=InjectionConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)  # for LLM injection and the LLM judge
    hub_dataset_id: str | None = None  # `make push`: the dataset repo (card + this recipe as pipeline.yaml)
    ray: RayConfig = field(default_factory=RayConfig)


def load_seeds(cfg: SeedsConfig, pairs: bool = False):
    """The recipe's seeds; `pairs`: offline train seeds in minimal pairs (only the offline injector composes a twin on
    its pair's skeleton; an LLM writes its own question)."""
    from pipelines import seed_files, seeds

    if cfg.kind == "offline":
        return seeds.offline_seeds(cfg.n_per_split, seed=cfg.seed, pairs=pairs)
    if cfg.kind == "hub":
        if not cfg.sources:
            raise RecipeError("seeds.sources: kind hub needs at least one source")
        return [s for src in cfg.sources
                for s in seed_files.hub_split_seeds(src.name, src.splits, src.carve,
                                                    {sp: src.limit.get(sp, cfg.limit) for sp in src.splits},
                                                    path=cfg.hub_path, revision=cfg.hub_revision)]
    if cfg.kind == "local":
        return seed_files.local_seeds(cfg.path, split=cfg.split)[: cfg.limit]
    raise RecipeError(f"seeds.kind: {cfg.kind!r} is not offline, hub or local")


def produced_splits(recipe: "DataRecipe") -> set[tuple[str, str]]:
    """The (source, split) pairs of questions this recipe stores, known without loading anything; what RL and eval
    recipes read must be among them (tests/unit/test_recipes.py checks every recipe of the repo)."""
    from pipelines import seed_files

    cfg = recipe.seeds
    if cfg.kind == "offline":
        splits = {s for s, n in cfg.n_per_split.items() if n != 0}
        return {("geo", s) for s in splits} | {(f"geo-probe-{d}", s) for d, probe_splits in
                                               active_probes(recipe).items() for s in probe_splits if s in splits}
    if cfg.kind == "hub":
        for src in cfg.sources:
            seed_files.check_split_plan(src.name, src.splits, src.carve)
        return {(src.name, s) for src in cfg.sources for s in src.splits}
    return {(Path(cfg.path or "").stem, cfg.split)}


@contextlib.contextmanager
def endpoint(cfg: EndpointConfig, needed: bool):
    """(base_url, model) of the LLM endpoint; starts the embedded one when no base_url is configured."""
    if not needed or cfg.base_url:
        yield cfg.base_url, cfg.model
        return
    from seekhelp.backends.server import serve

    with serve(cfg.model) as srv:
        yield srv.base_url, srv.model


def _seed_id(seed) -> str:
    return seed.id if hasattr(seed, "id") else content_hash("seed", seed.get("question"), seed.get("answers"))


def active_probes(recipe: DataRecipe) -> dict:
    """The probes this run composes: only the offline injector on offline seeds composes them (with other seeds or
    LLM injection: none); a detail the injector never draws is refused."""
    from pipelines.offline_inject import PROBE_DETAILS

    probes = recipe.injection.probes
    if bad := sorted(set(probes) - set(PROBE_DETAILS)):
        raise RecipeError(f"injection.probes: {bad} are not sensitive details the injector draws "
                          f"({list(PROBE_DETAILS)})")
    return probes if recipe.injection.kind == "offline" and recipe.seeds.kind == "offline" else {}


def extra_detail(recipe: DataRecipe):
    """The recipe's `injection.extra_detail` as an ExtraDetail (None when unset); a bad one is refused."""
    from pipelines.offline_inject import ExtraDetail

    cfg = dict(recipe.injection.extra_detail or {})
    if not cfg:
        return None
    for key in ("kinds", "splits"):
        if key in cfg:
            cfg[key] = tuple([cfg[key]] if isinstance(cfg[key], str) else cfg[key])
    try:
        return ExtraDetail(**cfg)
    except (TypeError, ValueError) as e:
        raise RecipeError(f"injection.extra_detail: {e}") from e


def inject_offline(recipe: DataRecipe, seeds) -> tuple[list[Question], list[dict]]:
    from pipelines.offline_inject import inject as offline_inject

    extra = extra_detail(recipe)
    res = offline_inject(seeds, seed=recipe.seeds.seed, extra=extra)
    rejected = [{"item_id": _seed_id(r["seed"]), "stage": "injection", "reason": r["reason"]} for r in res.rejected]
    questions, ids = list(res.questions), {q.id for q in res.questions}
    for detail, splits in active_probes(recipe).items():
        probe = offline_inject([s for s in seeds if s.split in splits], seed=recipe.seeds.seed, detail=detail,
                               extra=extra)
        # a question that drew this very detail is its own probe: stored once, under its own source
        new = [dataclasses.replace(q, source=f"{q.source}-probe-{detail}") for q in probe.questions if q.id not in ids]
        log.info("probe %s: %d questions (%d already carry it)", detail, len(new), len(probe.questions) - len(new))
        questions += new
        ids |= {q.id for q in new}
    return questions, rejected


def teacher_dialogues(recipe: DataRecipe, questions: list[Question], shard_dir: Path, run_id: str) -> None:
    """The distilabel pipeline: questions → teacher dialogues → deterministic judges → parquet shards."""
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts

    from pipelines.steps import DeterministicJudges, TeacherDialogues, WriteShards

    t = recipe.teacher
    runtime_cfg = None
    if t.kind == "runtime":
        if not (t.slm and t.llm and t.slm.base_url and t.llm.base_url):
            raise RecipeError("teacher.kind=runtime needs teacher.slm.base_url and teacher.llm.base_url")
        runtime_cfg = {"temperature": t.temperature, "n_max": t.n_max, "ground": t.ground,
                       "slm_max_new_tokens": t.slm_max_new_tokens, "llm_max_new_tokens": t.llm_max_new_tokens,
                       **{f"{role}_endpoint": {"base_url": e.base_url, "model": e.model, "api_key_env": e.api_key_env,
                                               "max_concurrency": e.max_concurrency, "extra_body": e.extra_body}
                          for role, e in (("slm", t.slm), ("llm", t.llm))}}
    from pipelines.llm_injection import _contained, _replicas, with_ray

    rows = [{"question_json": json.dumps(q.to_dict(), ensure_ascii=False)} for q in questions]
    cache = Path(recipe.shards).parent / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    # A fresh distilabel folder per run: distilabel reloads a cached pipeline.yaml even with use_cache=False, and
    # the one a killed run left behind breaks the rerun. _contained: distilabel leaves the root logger on a closed
    # queue (every later log line would fail) unless it is restored.
    work = Path(tempfile.mkdtemp(prefix=f"teacher-{run_id}-", dir=cache))
    try:
        with _contained(work), Pipeline(name=f"seekhelp-teacher-{run_id}", cache_dir=str(work)) as pipe:
            load = LoadDataFromDicts(data=rows, batch_size=recipe.batch_size)
            teach = TeacherDialogues(teacher=t.kind, samples=t.samples, seed=recipe.seeds.seed,
                                     runtime_config=runtime_cfg, input_batch_size=recipe.batch_size,
                                     **_replicas(recipe.ray.replicas))
            judge = DeterministicJudges(input_batch_size=recipe.batch_size)
            write = WriteShards(shard_dir=str(shard_dir), run_id=run_id, input_batch_size=recipe.batch_size)
            load >> teach >> judge >> write
            distiset = with_ray(pipe, recipe.ray.address).run(use_cache=False)
        produced = distiset["default"]["train"] if distiset else []
        if len(produced) != len(rows):  # distilabel can drop or blank failed batches: never silently
            log.warning("teacher pipeline returned %d of %d rows", len(produced), len(rows))
    finally:
        if recipe.ray.address:
            import ray

            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def run(recipe: DataRecipe) -> dict:
    from seekhelp.store import Store

    t0 = time.perf_counter()
    if recipe.injection.probes and not active_probes(recipe):  # a bad detail name stops here, before any work
        log.warning("injection.probes skipped: only the offline injector on offline seeds composes them")
    if extra_detail(recipe) and recipe.injection.kind != "offline":  # a bad one stops here too
        log.warning("injection.extra_detail skipped: only the offline injector composes it")
    run_id = "data-" + content_hash(to_dict(recipe), length=12)
    shard_dir = Path(recipe.shards) / run_id
    needs_endpoint = recipe.injection.kind == "llm" or recipe.judge.llm_judge
    from seekhelp.preflight import check_endpoint, data_endpoints

    for e in data_endpoints(recipe):  # one real call to each external endpoint before any work
        if e.base_url:
            log.info("%s", check_endpoint(e.field, e.base_url, e.model, e.api_key_env, extra_body=e.extra_body))
    # bad seed files are refused before the store is touched
    seeds = load_seeds(recipe.seeds, pairs=recipe.injection.kind == "offline")
    log.info("%d seeds", len(seeds))
    with Store(recipe.store) as store:
        store.start_run("data", to_dict(recipe), models={"endpoint": recipe.endpoint.model}, run_id=run_id)
        shard_dir.mkdir(parents=True, exist_ok=True)  # a rerun with nothing new to write still ingests from it
        with endpoint(recipe.endpoint, needs_endpoint) as (base_url, model):
            from seekhelp.store.ingest import write_shard

            if needs_endpoint and not recipe.endpoint.base_url:  # the embedded one, now that it is up
                log.info("%s", check_endpoint("endpoint", base_url, model, recipe.endpoint.api_key_env))

            if recipe.injection.kind == "llm":  # chunk by chunk, each stored as it finishes
                from pipelines import resumable

                questions = resumable.inject(recipe, store, seeds, base_url, model, shard_dir, run_id)
            else:
                questions, rejected = inject_offline(recipe, seeds)
                log.info("%d questions, %d rejected by the checks", len(questions), len(rejected))
                stored = store.stored_ids("questions", [q.id for q in questions])
                if new := [q for q in questions if q.id not in stored]:
                    write_shard(shard_dir, "questions", new, run_id)
                known = set(store.sql("SELECT item_id FROM failures WHERE stage = 'injection'")["item_id"].to_list())
                if rejected := [r for r in rejected if r["item_id"] not in known]:
                    write_shard(shard_dir, "failures", rejected, run_id)
                store.ingest_shards(shard_dir)
            have = set(store.sql("SELECT DISTINCT question_id FROM trajectories WHERE strategy = 'teacher'")
                       ["question_id"].to_list())
            todo = [q for q in questions if q.id not in have and not q.meta.get("probe")
                    and (recipe.teacher.splits is None or q.split in recipe.teacher.splits)]
            log.info("teacher dialogues for %d questions (%d already stored)", len(todo), len(questions) - len(todo))
            if todo:
                teacher_dialogues(recipe, todo, shard_dir, run_id)
                store.ingest_shards(shard_dir)
            if recipe.judge.llm_judge:
                from pipelines import resumable

                log.info("LLM judge: %d verdicts", resumable.judge(recipe, store, base_url, model, shard_dir, run_id))
        store.finish_run(run_id, "ok")
        counts = store.counts()
    return {"run_id": run_id, "wall_s": round(time.perf_counter() - t0, 1), "rows": counts}


@entry_point
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="pipelines/recipes/demo.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("DISTILABEL_LOG_LEVEL", "WARNING")
    result = run(load_recipe(DataRecipe, args.config, args.set))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
