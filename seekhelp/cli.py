"""`seekhelp` command line: ask, models, serve-llm, and the store commands (sql, stats, export, ...)."""

import asyncio
import contextlib
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from seekhelp.errors import SeekhelpError, user_errors
from seekhelp.records import Question, Trajectory


class App(typer.Typer):
    """A Typer app whose every command reports user errors through the one handler (`seekhelp.errors`): one
    `error:` line, exit 2, whatever module the command lives in."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(f):
            @functools.wraps(f)
            def reporting(*a, **kw):
                with user_errors():
                    return f(*a, **kw)

            register(reporting)
            return f

        return decorator


app = App(help="Teach a small on-device model when and how to ask a large one for help, privately.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
models_app = App(help="The model registry: list and prepare embedded models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console()
err = Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "openai", "urllib3", "transformers", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str) -> None:
    """Bad input found by a command itself: reported like every other user error (one line, exit 2)."""
    raise SeekhelpError(message)


@models_app.command("list")
def models_list() -> None:
    """Show the registry and which embedded models are prepared."""
    from seekhelp.models import cache_root, list_models

    t = Table("name", "source", "hub id", "prepared", "description")
    for r in list_models():
        t.add_row(r["name"], r["source"], r["hub_id"], {None: "-", True: "yes", False: "no"}[r["prepared"]],
                  r["description"])
    console.print(t)
    console.print(f"cache: {cache_root()}")


@models_app.command("prepare")
def models_prepare(name: str = "smollm2-135m", force: bool = False) -> None:
    """Materialize an embedded model into the cache folder (once)."""
    from seekhelp.models import prepare

    setup_logging()
    with user_errors():
        console.print(f"{name}: {prepare(name, force=force)}")


@app.command("serve-llm")
def serve_llm(model: str = "smollm2-135m", port: int = 8000, host: str = "127.0.0.1") -> None:
    """Run a real OpenAI-compatible endpoint (`transformers serve`) on a model until Ctrl-C."""
    from seekhelp.backends.server import serve

    setup_logging()
    with user_errors(), serve(model, port=port, host=host) as srv:
        console.print(f"serving {model} at {srv.base_url} (request model name: {srv.model}); Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            while srv.process and srv.process.poll() is None:
                time.sleep(1)


@contextlib.contextmanager
def llm_backend(base_url: str | None, model: str | None, embedded: str = "smollm2-135m",
                api_key_env: str = "OPENAI_API_KEY"):
    """An OpenAI-compatible backend, checked with one real call: the given endpoint, or a `transformers serve`
    started for the block."""
    from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
    from seekhelp.backends.server import serve

    base_url = base_url or os.environ.get("SEEKHELP_LLM_BASE_URL")
    if base_url:
        b = OpenAIBackend(EndpointConfig(base_url=base_url, model=model or os.environ.get("SEEKHELP_LLM_MODEL"),
                                         api_key_env=api_key_env))
        b.check()  # one real call before any model is loaded: a wrong URL, model id or key fails in seconds
        yield b
        return
    with serve(model or embedded) as srv:
        b = OpenAIBackend(EndpointConfig(base_url=srv.base_url, model=srv.model, label=srv.label))
        b.check()
        yield b


def print_trajectory(t: Trajectory) -> None:
    for turn in t.turns:
        color = {"slm": "cyan", "llm": "magenta", "guard": "red"}.get(turn.role, "white")
        head = f"[{color}]{turn.role.upper()}[/{color}] action={turn.action} tokens={turn.prompt_tokens}+" \
               f"{turn.completion_tokens} {turn.latency_s:.2f}s"
        if turn.guard:
            head += f" guard={turn.guard}"
        if turn.errors:
            head += f" [yellow]errors={turn.errors}[/yellow]"
        console.print(head)
        if turn.sent is not None:
            console.print(f"  [dim]sent:[/dim] {turn.sent}", highlight=False)
        console.print(f"  {turn.raw.strip()}", highlight=False)
    sp, sc = t.tokens("slm")
    lp, lc = t.tokens("llm")
    console.print(f"[bold]answer:[/bold] {t.final_answer!r}  stop={t.stop_reason}  format_ok={t.format_ok}  "
                  f"llm_calls={t.n_llm_calls}  slm_tokens={sp}+{sc}  llm_tokens={lp}+{lc}")


@app.command()
def ask(
    question: Annotated[str, typer.Option(help="The user's question")],
    private: Annotated[list[str] | None, typer.Option(
        help="A private fact of the question (repeatable): a label for the guard and the leak check, never shown "
             "to any model")] = None,
    strategy: str = "dynamic",
    slm: str = "smollm2-135m",
    llm_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL; none = embedded")] = None,
    llm_model: str | None = None,
    n_max: int = 4,
    guard: str = "block",
    ground: Annotated[bool, typer.Option(help="Give the LLM facts from the offline knowledge base")] = True,
    temperature: float = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the trajectory as JSON")] = False,
) -> None:
    """Answer one question with a strategy and print the dialogue (or the trajectory JSON)."""
    from seekhelp.strategies import STRATEGIES, StrategyContext, run_strategy

    setup_logging()
    if strategy not in STRATEGIES:
        fail(f"--strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if guard not in ("block", "redact", "off"):
        fail(f"--guard {guard!r}: choose block, redact or off")
    if not question.strip():
        fail("--question is empty")
    q = Question(question=question, answers=[], privacy_items=list(private or []), source="cli")
    with user_errors(), llm_backend(llm_base_url, llm_model) as llm:  # checked before the SLM is loaded
        from seekhelp.backends.local import TransformersBackend
        from seekhelp.runtime import RuntimeConfig

        slm_backend = TransformersBackend(slm)
        grounder = None
        if ground:
            from seekhelp.knowledge import KnowledgeBase
            from seekhelp.knowledge import grounder as make_grounder

            grounder = make_grounder(KnowledgeBase.from_geonames(), k=3)
        cfg = RuntimeConfig(n_max=n_max, guard=guard, slm_temperature=temperature)
        ctx = StrategyContext(slm=slm_backend, llm=llm, config=cfg, grounder=grounder)
        (traj,) = asyncio.run(run_strategy(strategy, ctx, [q]))
    if as_json:
        sys.stdout.write(json.dumps(traj.to_dict(), ensure_ascii=False, indent=2) + "\n")
    else:
        print_trajectory(traj)


@app.command()
def serve(
    slm: Annotated[str, typer.Option(help="The local SLM: registry name or model folder")] = "smollm2-135m",
    llm_base_url: Annotated[str | None, typer.Option(help="Upstream OpenAI-compatible base URL; none = embedded")]
    = None,
    llm_model: Annotated[str | None, typer.Option(help="Upstream model name")] = None,
    port: int = 8080,
    host: Annotated[str, typer.Option(help="Bind address (keep 127.0.0.1 unless a proxy in front adds TLS)")]
    = "127.0.0.1",
    guard: Annotated[str, typer.Option(help="Outgoing privacy guard: block, redact or off")] = "block",
    ground: Annotated[bool, typer.Option(help="Give the upstream facts from the offline knowledge base")] = False,
    api_key_env: Annotated[str | None, typer.Option(help="Require `Authorization: Bearer $VAR` on /v1/*")] = None,
    llm_api_key_env: Annotated[str, typer.Option(help="Variable holding the upstream's API key")] = "OPENAI_API_KEY",
    store: Annotated[Path | None, typer.Option(help="Write every served episode to this DuckDB store")] = None,
    n_max: int = 4,
    temperature: float = 0.0,
    max_batch: int = 32,
    batch_window_ms: float = 20.0,
    max_inflight_batches: int = 1,
    max_body_bytes: int = 1 << 20,
    price_prompt: Annotated[float, typer.Option(help="Upstream USD per 1M prompt tokens (audit cost)")] = 0.0,
    price_completion: Annotated[float, typer.Option(help="Upstream USD per 1M completion tokens")] = 0.0,
) -> None:
    """Serve the SLM as an OpenAI-compatible privacy proxy in front of an LLM until Ctrl-C."""
    setup_logging()
    if guard not in ("block", "redact", "off"):
        fail(f"--guard {guard!r}: choose block, redact or off")
    key = None
    if api_key_env:
        key = os.environ.get(api_key_env, "").strip() or fail(f"--api-key-env {api_key_env}: ${api_key_env} is empty")
    with user_errors():
        from seekhelp.runtime import RuntimeConfig
        from seekhelp.serve import ServeSettings, create_app, serve_forever
        from seekhelp.strategies import StrategyContext

        base_url = llm_base_url or os.environ.get("SEEKHELP_LLM_BASE_URL")
        upstream = contextlib.ExitStack()
        if base_url:  # checked with one real call before any model is loaded; the key comes from the named variable
            llm = upstream.enter_context(llm_backend(base_url, llm_model, api_key_env=llm_api_key_env))
        grounder = None
        if ground:
            from seekhelp.knowledge import KnowledgeBase
            from seekhelp.knowledge import grounder as make_grounder

            grounder = make_grounder(KnowledgeBase.from_geonames(), k=3)
        from seekhelp.backends.local import TransformersBackend

        slm_backend = TransformersBackend(slm, max_batch_size=max_batch)
        cfg = RuntimeConfig(n_max=n_max, guard=guard, slm_temperature=temperature)
        writer = None
        if store is not None:
            from seekhelp.serve.store import ServedStore

            writer = ServedStore(store, {"slm": slm, "llm_model": llm_model, "guard": guard, "ground": ground})
        with upstream as stack:
            if not base_url:  # the embedded model behind `transformers serve`, started for the server's life
                llm = stack.enter_context(llm_backend(None, llm_model))
            settings = ServeSettings(max_batch=max_batch, batch_window_ms=batch_window_ms, api_key=key,
                                     max_inflight_batches=max_inflight_batches, max_body_bytes=max_body_bytes,
                                     prices={llm.name: {"prompt": price_prompt, "completion": price_completion}})
            ctx = StrategyContext(slm=slm_backend, llm=llm, config=cfg, grounder=grounder)
            app_ = create_app(ctx, settings, on_batch=writer.on_batch if writer else None,
                              on_shutdown=writer.aclose if writer else None)
            err.print(f"serving {slm} at http://{host}:{port}/v1 (models seekhelp/<strategy>) in front of {llm.name}; "
                      f"guard={guard}{', bearer auth' if key else ''}{f', store={store}' if store else ''}; "
                      "Ctrl-C stops it", highlight=False)
            serve_forever(app_, host=host, port=port)


@app.command()
def doctor(
    data: Annotated[str | None, typer.Option(help="Data recipe, e.g. pipelines/recipes/demo.yaml")] = None,
    rl: Annotated[str | None, typer.Option(help="RL recipe")] = None,
    eval_recipe: Annotated[str | None, typer.Option("--eval", help="Eval recipe")] = None,
    data_set: Annotated[list[str] | None, typer.Option("--data-set", help="KEY=VALUE override")] = None,
    rl_set: Annotated[list[str] | None, typer.Option("--rl-set", help="KEY=VALUE override")] = None,
    eval_set: Annotated[list[str] | None, typer.Option("--eval-set", help="KEY=VALUE override")] = None,
) -> None:
    """Check the recipes' endpoints (one real call each) and the client stack, without starting any stage."""
    logging.basicConfig(level=logging.WARNING)
    from seekhelp.preflight import doctor as run_doctor

    t0 = time.perf_counter()
    findings = run_doctor(data, rl, eval_recipe, {"data": data_set or [], "rl": rl_set or [], "eval": eval_set or []})
    from rich.markup import escape

    for f in findings:
        mark = "[green]ok[/green]  " if f.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {escape(f'{f.what}: {f.detail}')} ({f.seconds:.1f} s)", highlight=False,
                      soft_wrap=True)
    bad = [f for f in findings if not f.ok]
    if bad:
        raise SeekhelpError(f"doctor: {len(bad)} problem(s) after {time.perf_counter() - t0:.0f} s; first: "
                            f"{bad[0].what}: {bad[0].detail}")
    console.print(f"doctor: all {len(findings)} checks passed in {time.perf_counter() - t0:.1f} s", highlight=False)


@app.command("push-dataset")
def push_dataset_cmd(
    repo: Annotated[str, typer.Option(help="Hub dataset repo id, e.g. you/seekhelp-dialogues")],
    query: Annotated[str, typer.Option(help="Selection query (.sql file or stored name)")] = "sft_candidates",
    folder: Annotated[Path | None, typer.Option(help="An existing export folder (skips the query)")] = None,
    store: Path = Path(os.environ.get("SEEKHELP_STORE", "data/store.duckdb")),
    public: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
) -> None:
    """Export a selection and push it to the Hub with a card (private unless --public)."""
    from seekhelp.hub import push_dataset

    setup_logging()
    with user_errors():
        if folder is None:
            from seekhelp.prompts import load_prompt
            from seekhelp.store.export import export_sft
            from seekhelp.store.query import load_query

            folder = Path("data/exports/push") / repo.replace("/", "__")
            export_sft(store, load_query(query), folder, load_prompt("slm_dynamic"))
        stage = push_dataset(folder, repo, private=not public, revision=revision, dry_run=dry_run)
    console.print(f"{'staged' if dry_run else 'pushed'} {folder} → {repo} ({stage})")


@app.command("push-model")
def push_model_cmd(
    folder: Annotated[Path, typer.Argument(help="A trained model folder")],
    repo: Annotated[str, typer.Option(help="Hub model repo id")],
    public: bool = False,
    revision: Annotated[str | None, typer.Option(help="Branch, e.g. round-2 (one revision per RL round)")] = None,
    dry_run: bool = False,
) -> None:
    """Push a trained model folder (weights, tokenizer, template, recipe, card) to the Hub."""
    from seekhelp.hub import push_model

    setup_logging()
    with user_errors():
        stage = push_model(folder, repo, private=not public, revision=revision, dry_run=dry_run)
    console.print(f"{'staged' if dry_run else 'pushed'} {folder} → {repo}@{revision or 'main'} ({stage})")


@app.command("eval")
def eval_cmd(
    config: Annotated[str, typer.Option("--config", help="Eval recipe (YAML), e.g. evals/demo.yaml")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a recipe field KEY=VALUE")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, warnings only")] = False,
) -> None:
    """Run an eval recipe: strategies × datasets → metrics in the store → report.md with plots."""
    from seekhelp.eval import main as eval_main

    argv = ["--config", config, *[a for s in set_ or [] for a in ("--set", s)], *(["--quiet"] if quiet else [])]
    raise typer.Exit(eval_main(argv))


def _register_optional() -> None:
    """Commands that live next to their subsystem register themselves here."""
    from seekhelp.store.commands import register

    register(app)


_register_optional()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
