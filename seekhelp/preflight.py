"""Fail in seconds: one real call to every endpoint a stage will use, before its work starts.

Every stage (data, RL, eval, `seekhelp ask` / `serve`) checks its endpoints with `check_endpoint`, which builds the
very `OpenAIBackend` the run builds and makes one real call through it (the model list, then a 1-token chat
completion): a wrong URL, a model id the server does not serve, a refused key or an SDK that will not build its
client stops the stage in one line, not after an hour of per-row failures.

`seekhelp doctor` runs the same checks for a set of recipes without starting any stage, and `make demo` calls it
first. Endpoints a stage starts itself (the embedded `transformers serve`, the kb-retriever) are checked by the
stage once they are up; doctor checks what it can without loading a model: the client stack against a local
stand-in server, and that the serving code imports.
"""

import importlib
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

from seekhelp.errors import one_line


@dataclass
class Endpoint:
    """An endpoint as a recipe names it: `field` says where (e.g. "endpoints.main", "llm")."""

    field: str
    base_url: str | None  # None: the stage starts it (embedded `transformers serve`, kb-retriever)
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    kind: str = "openai"  # openai | embedded | kb-retriever
    extra_body: dict | None = None  # sent with the check as with every call of the run


def check_endpoint(field: str, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                   label: str | None = None, timeout_s: float = 30.0, extra_body: dict | None = None) -> str:
    """One real call through a fresh OpenAIBackend; raises EndpointError whose line starts with the recipe field."""
    from seekhelp.backends.openai_compat import EndpointConfig, EndpointError, OpenAIBackend

    try:
        backend = OpenAIBackend(EndpointConfig(base_url=base_url, model=model, api_key_env=api_key_env,
                                               label=label or model, extra_body=extra_body))
        return backend.check(timeout_s)
    except EndpointError as e:
        if not field:
            raise
        raise EndpointError(f"{field}: {e}") from e


def data_endpoints(recipe) -> list[Endpoint]:
    """The endpoints a data recipe (pipelines.generate.DataRecipe) calls."""
    out = []
    if recipe.injection.kind == "llm" or recipe.judge.llm_judge:
        e = recipe.endpoint
        out.append(Endpoint("endpoint", e.base_url, e.model, e.api_key_env, "openai" if e.base_url else "embedded"))
    t = recipe.teacher
    if t.kind == "runtime":
        for role in ("slm", "llm"):
            e = getattr(t, role)
            if e is not None:
                out.append(Endpoint(f"teacher.{role}", e.base_url, e.model, e.api_key_env,
                                    "openai" if e.base_url else "embedded", e.extra_body))
    return out


def rl_endpoints(recipe) -> list[Endpoint]:
    """The LLM an RL recipe (rl.loop.RLRecipe) samples against (`kind: local` runs in-process: nothing to call)."""
    e = recipe.llm
    if e.kind == "local":
        return []
    return [Endpoint("llm", e.base_url, e.model, e.api_key_env, "openai" if e.base_url else "embedded",
                     e.extra_body)]


def eval_endpoints(recipe) -> list[Endpoint]:
    """The endpoints an eval recipe's runs and judge use (in-process `kind: local` ones need no call)."""
    used = {r.llm for _, r in recipe.all_runs() if r.strategy != "slm_cot"}
    if recipe.judge.llm_judge:
        used.add(recipe.judge.endpoint)
    out = []
    for e in recipe.endpoints:
        if e.name not in used or e.kind == "local":
            continue
        kind = "kb-retriever" if e.kind == "kb-retriever" else ("openai" if e.base_url else "embedded")
        out.append(Endpoint(f"endpoints.{e.name}", e.base_url if kind == "openai" else None, e.model,
                            e.api_key_env, kind, e.extra_body if kind == "openai" else None))
    return out


def check_client_stack(timeout_s: float = 30.0) -> str:
    """The installed openai SDK builds our client and completes one call against a local stand-in server."""
    from seekhelp.backends.scripted_server import ScriptedServer

    with ScriptedServer() as srv:
        check_endpoint("", srv.base_url, "scripted", timeout_s=timeout_s)
    import openai

    return f"openai {openai.__version__}: client built, one call completed against a local server"


def check_serving_code() -> str:
    """What `transformers serve` needs imports (the embedded endpoint is started by the stages)."""
    import transformers

    if not any(importlib.util.find_spec(m) for m in ("transformers.cli.serve", "transformers.commands.serving")):
        raise ImportError(f"transformers {transformers.__version__} has no `serve` command")
    for mod in ("fastapi", "uvicorn", "openai"):
        importlib.import_module(mod)
    return f"transformers {transformers.__version__}: `transformers serve` and its serving extra import"


def _vllm_found() -> str:
    import shutil

    from seekhelp.backends.server import vllm_executable

    exe = vllm_executable()
    if shutil.which(exe) is None and not Path(exe).is_file():
        raise FileNotFoundError(f"no `vllm` executable ({exe}): install vLLM in its own environment "
                                "(`make vllm-env`) and set VLLM_BIN, or put vllm on PATH")
    return f"vllm executable: {exe}"


def _importable(module: str, why: str) -> str:
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"`{module}` is not installed ({why}): pip install -e '.[gpu]'")
    return f"{module} {_version(module)} imports"


def _version(module: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return "?"


def _gpus(needed: int, what: str) -> str:
    from seekhelp.backends.sampler import gpu_memory_used_mib

    used = gpu_memory_used_mib()
    if used is None:
        raise RuntimeError(f"{what} needs {needed} GPU(s); no nvidia-smi answers on this machine")
    if len(used) < needed:
        raise RuntimeError(f"{what} needs {needed} GPU(s); {len(used)} visible (CUDA_VISIBLE_DEVICES?)")
    return f"{len(used)} GPU(s) visible, MiB in use: {used}"


def _hub_token(field: str, repo: str) -> str:
    import os

    if not (os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")):
        raise PermissionError(f"{field} {repo!r} is set but HF_TOKEN is empty: `make push` would be refused")
    return f"{field} {repo}: a token is set"


def _flag_value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args[:-1] else None


def serving_checks(p, field: str) -> list[tuple[str, object]]:
    """What a sampler config (an RL recipe's `policy`, an eval recipe's `slm_serving`) needs: vLLM and its GPUs."""
    out: list[tuple[str, object]] = []
    if p.kind == "server" and p.engine == "vllm":
        out.append((f"{field}: vllm serve", _vllm_found))
        dp = int(_flag_value(p.extra_args, "--data-parallel-size") or 1)
        tp = int(_flag_value(p.extra_args, "--tensor-parallel-size") or 1)
        out.append((f"{field}: GPUs",
                    lambda n=dp * tp: _gpus(n, f"the {field} server (data x tensor parallel = {n})")))
    if p.kind == "vllm":
        out.append((f"{field}: vllm (in-process)", lambda: _importable("vllm", f"{field}.kind: vllm")))
    return out


def rl_placement_checks(recipe) -> list[tuple[str, object]]:
    """What an RL recipe places on a machine: the policy engine, the retrain launcher and their GPUs."""
    rt = recipe.retrain
    out = serving_checks(recipe.policy, "policy")
    if rt.launcher == "accelerate":
        cfg = Path(rt.accelerate_config).read_text(encoding="utf-8") if Path(rt.accelerate_config).is_file() else ""
        if "DEEPSPEED" in cfg:
            out.append(("retrain: DeepSpeed", lambda: _importable("deepspeed", rt.accelerate_config)))
        out.append(("retrain: GPUs", lambda n=rt.num_processes: _gpus(n, f"the retrain ({n} processes)")))
    if recipe.hub_model_id:
        out.append(("rl: hub_model_id", lambda: _hub_token("hub_model_id", recipe.hub_model_id)))
    return out


def _routable(endpoints: list[Endpoint], ray_address: str) -> str:
    """On a Ray cluster the LLM steps run on any node: a loopback URL would reach that node, not the server."""
    from urllib.parse import urlparse

    head = ray_address.split(":")[0]
    loopback = [e for e in endpoints if e.base_url and urlparse(e.base_url).hostname in ("localhost", "127.0.0.1")]
    if loopback and head not in ("localhost", "127.0.0.1"):
        raise ValueError(f"{loopback[0].field}.base_url {loopback[0].base_url} is loopback, but Ray actors run on "
                         "every node of the cluster: use the server's address (--set ...base_url=http://<host>:port/v1)")
    return "every endpoint is reachable by address from the Ray nodes" if not loopback else \
        "loopback endpoints with a loopback Ray head (one machine)"


@dataclass
class Finding:
    ok: bool
    what: str
    detail: str
    seconds: float


def _run(what: str, fn) -> Finding:
    t0 = time.perf_counter()
    try:
        return Finding(True, what, fn(), time.perf_counter() - t0)
    except Exception as e:  # every problem becomes one line; doctor reports them all, not just the first
        return Finding(False, what, one_line(e), time.perf_counter() - t0)


def _parsed(kind: str, path: str, load) -> tuple[Finding, object | None]:
    """Load a recipe once: the finding that says whether it parses, and the recipe (None when it does not)."""
    t0, got = time.perf_counter(), None
    try:
        got = load()
    except Exception as e:  # a bad recipe is one line of the report, like every other problem
        return Finding(False, f"{kind} recipe {path}", one_line(e), time.perf_counter() - t0), None
    return Finding(True, f"{kind} recipe {path}", "parses", time.perf_counter() - t0), got


def doctor(data: str | None = None, rl: str | None = None, eval_: str | None = None,
           overrides: dict[str, list[str]] | None = None) -> list[Finding]:
    """Check the recipes' endpoints and the client stack without starting any stage."""
    from seekhelp.config import load_recipe

    overrides = overrides or {}
    findings = [_run("openai client", check_client_stack)]
    endpoints: list[tuple[str, Endpoint]] = []
    if data:
        from pipelines.generate import DataRecipe

        found, recipe = _parsed("data", data, lambda: load_recipe(DataRecipe, data, overrides.get("data")))
        findings.append(found)
        if recipe is not None:
            endpoints += [(data, e) for e in data_endpoints(recipe)]
            if recipe.hub_dataset_id:
                findings.append(_run(f"{data}: hub_dataset_id",
                                     lambda: _hub_token("hub_dataset_id", recipe.hub_dataset_id)))
            if recipe.ray.address:
                findings.append(_run(f"{data}: ray", lambda: _importable("ray", "ray.address is set")))
                findings.append(_run(f"{data}: ray endpoints",
                                     lambda: _routable(data_endpoints(recipe), recipe.ray.address)))
    if rl:
        from rl.loop import RLRecipe

        found, rl_recipe = _parsed("rl", rl, lambda: load_recipe(RLRecipe, rl, overrides.get("rl")))
        findings.append(found)
        if rl_recipe is not None:
            endpoints += [(rl, e) for e in rl_endpoints(rl_recipe)]
            findings += [_run(f"{rl}: {what}", fn) for what, fn in rl_placement_checks(rl_recipe)]
    if eval_:
        from seekhelp.evaluation import recipe as eval_recipes

        found, ev = _parsed("eval", eval_, lambda: eval_recipes.load(eval_, overrides.get("eval")))
        findings.append(found)
        if ev is not None:
            endpoints += [(eval_, e) for e in eval_endpoints(ev)]
            findings += [_run(f"{eval_}: {what}", fn) for what, fn in serving_checks(ev.slm_serving, "slm_serving")]
    if any(e.kind == "embedded" for _, e in endpoints):
        findings.append(_run("embedded endpoint", check_serving_code))
    for path, e in endpoints:
        where = f"{path}: {e.field}"  # the path as given: two stages' recipes may share a file name
        if e.kind == "openai":
            findings.append(_run(where, lambda e=e: check_endpoint("", e.base_url, e.model, e.api_key_env,
                                                                   extra_body=e.extra_body)))
        else:
            findings.append(Finding(True, where, f"{e.kind}: started and checked by the stage itself", 0.0))
    return findings
