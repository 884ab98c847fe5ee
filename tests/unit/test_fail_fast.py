"""Fail in seconds, keep what finished: the preflight call through the run's own client, a batch that fails alike,
`seekhelp doctor`, and an eval whose last run fails (report for the finished runs, rerun reuses them).

Every server here is a real OpenAI-compatible HTTP server on 127.0.0.1 driven by the installed `openai` SDK, so
`make test-compat` runs these on both ends of the SDK range pyproject allows."""

import asyncio
import json
import time
from dataclasses import replace

import openai
import pytest
from typer.testing import CliRunner

from seekhelp.backends.base import GenParams
from seekhelp.backends.openai_compat import EndpointConfig, EndpointError, OpenAIBackend
from seekhelp.backends.scripted_server import Faults, ScriptedServer
from seekhelp.records import Question
from seekhelp.store import Store, run_sql

pytestmark = pytest.mark.openai_client
FAST = {"retry-after-ms": "10"}
DEAD_URL = "http://127.0.0.1:9/v1"  # discard port: nothing listens


def _backend(url, model="scripted", **kw):
    return OpenAIBackend(EndpointConfig(base_url=url, model=model, timeout_s=5.0, **kw))


def test_check_passes_on_a_served_model_and_names_the_served_ones_otherwise():
    with ScriptedServer(models=["qwen3-8b"]) as srv:
        assert "answers" in _backend(srv.base_url, "qwen3-8b").check()
        with pytest.raises(EndpointError, match=r"model 'qwen3' is not served there \(served: qwen3-8b\)"):
            _backend(srv.base_url, "qwen3").check()
        assert len(srv.pings) == 1 and srv.requests == []  # the refused id never reached the script


def test_check_fails_in_seconds_when_nothing_listens():
    t0 = time.perf_counter()
    with pytest.raises(EndpointError, match="not reachable"):
        _backend(DEAD_URL).check()
    assert time.perf_counter() - t0 < 10


def test_a_client_the_sdk_refuses_to_build_fails_the_check_not_the_run(monkeypatch):
    """What broke fresh installs: an argument the SDK no longer accepts. The preflight names it in one line."""

    def refuse(*a, **k):
        raise TypeError("Invalid timeout: expected a number, None, a tuple or Timeout")

    with ScriptedServer() as srv:
        monkeypatch.setattr(openai, "AsyncOpenAI", refuse)
        with pytest.raises(EndpointError, match="could not be built .*TypeError: Invalid timeout"):
            _backend(srv.base_url).check()
        assert srv.requests == [] and srv.pings == []


def test_a_batch_that_fails_alike_stops_and_a_mixed_one_is_recorded():
    convs = [[{"role": "user", "content": f"q{i}"}] for i in range(6)]
    with ScriptedServer(faults=Faults(server_error=1.0, retry_headers=FAST)) as srv:
        with pytest.raises(EndpointError, match="all 6 calls of a batch failed alike"):
            asyncio.run(_backend(srv.base_url, max_retries=1).generate(convs, GenParams()))
    with ScriptedServer(faults=Faults(script=["ok"], server_error=1.0, retry_headers=FAST)) as srv:
        outs = asyncio.run(_backend(srv.base_url, max_retries=0, max_concurrency=1).generate(convs, GenParams()))
    assert sum(o.ok for o in outs) == 1 and all(o.error for o in outs[1:])


def test_the_eval_endpoint_code_checks_and_calls_the_kb_retriever():
    import contextlib

    from seekhelp.evaluation.endpoints import Endpoints
    from seekhelp.evaluation.recipe import EndpointSpec, EvalRecipe

    recipe = EvalRecipe(name="t", endpoints=[EndpointSpec(name="kb", kind="kb-retriever")])

    async def go(b):
        ok = await b.acheck()
        (out,) = await b.generate([[{"role": "user", "content": "What is the capital of Peru?"}]], GenParams())
        await b.aclose()
        return ok, out

    with contextlib.ExitStack() as stack:
        b = Endpoints(recipe, stack, slms=None).backend("kb")
        ok, out = asyncio.run(go(b))
    assert "kb-retriever" in ok and out.ok and "Lima" in out.text


def test_data_stage_stops_in_seconds_on_a_wrong_endpoint(tmp_path, capsys):
    from pipelines.generate import main

    t0 = time.perf_counter()
    rc = main(["--config", "pipelines/recipes/demo.yaml", "--set", f"store={tmp_path}/s.duckdb",
               "--set", f"shards={tmp_path}/shards", "--set", f"endpoint.base_url={DEAD_URL}"])
    assert rc == 2 and time.perf_counter() - t0 < 20
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: endpoint: LLM endpoint") and "not reachable" in err[0]
    assert not (tmp_path / "s.duckdb").exists()  # stopped before the store was touched


def test_rl_stops_before_any_rollout_on_a_wrong_model_id(tmp_path, tiny_model_dir, capsys):
    from rl.loop import main

    Store(tmp_path / "s.duckdb").close()
    with ScriptedServer(models=["big-llm"]) as srv:
        rc = main(["--config", "rl/recipes/smollm2-135m/demo.yaml", "--set", f"store={tmp_path}/s.duckdb",
                   "--set", f"init_model={tiny_model_dir}", "--set", f"output_dir={tmp_path}/rl",
                   "--set", "llm.kind=openai", "--set", f"llm.base_url={srv.base_url}", "--set", "llm.model=bigllm"])
    err = capsys.readouterr().err
    assert rc == 2 and "error: llm: LLM endpoint 'bigllm'" in err and "not served there (served: big-llm)" in err
    assert srv.requests == [] and srv.pings == [] and not (tmp_path / "rl").exists()  # 404 before the script


def test_doctor_passes_the_demo_recipes_and_names_a_wrong_endpoint():
    from seekhelp.cli import app

    demo = ["doctor", "--data", "pipelines/recipes/demo.yaml", "--rl", "rl/recipes/smollm2-135m/demo.yaml",
            "--eval", "evals/demo.yaml"]
    ok = CliRunner().invoke(app, demo)
    assert ok.exit_code == 0, ok.output
    assert "all 6 checks passed" in ok.output and "client built, one call completed" in ok.output
    bad = CliRunner().invoke(app, [*demo, "--rl-set", "llm.kind=openai", "--rl-set", f"llm.base_url={DEAD_URL}"])
    assert bad.exit_code == 2
    assert ("FAIL rl/recipes/smollm2-135m/demo.yaml: llm: LLM endpoint 'smollm2-135m' at http://127.0.0.1:9/v1: "
            "not reachable") in bad.output


QUESTIONS = [Question(f"My friend {n} lives in Peru. Which city is the capital of Peru?", ["Lima"],
                      [f"The user's friend {n} lives in Peru."], source="geo", split="test")
             for n in ("Ada", "Bo", "Cy", "Di", "Ed")]


def _eval_recipe(tmp_path, base_url, model_dir):
    from seekhelp.evaluation import recipe as recipes

    store = tmp_path / "store.duckdb"
    if not store.exists():
        with Store(store) as s:
            s.add_questions(QUESTIONS)
    cfg = tmp_path / "r.yaml"
    cfg.write_text(json.dumps({
        "name": "partial", "store": str(store), "reports_dir": str(tmp_path / "reports"), "progress": False,
        "datasets": [{"name": "geo-test", "source": "geo", "split": "test"}],
        "endpoints": [{"name": "up", "base_url": base_url, "model": "scripted", "ground": False}],
        "runtime": {"slm_max_new_tokens": 8, "llm_max_new_tokens": 16, "n_max": 1},
        "runs": [{"name": "direct", "strategy": "llm_direct", "slm": model_dir, "llm": "up"},
                 {"name": "cot", "strategy": "llm_cot", "slm": model_dir, "llm": "up"}],
        "bertscore": {"model": "hashed"}}))
    return recipes.load(cfg)


def test_eval_keeps_the_finished_runs_when_the_last_fails_and_a_rerun_reuses_them(tmp_path, tiny_model_dir):
    from seekhelp.evaluation.harness import EvalIncomplete, run_eval

    # the preflight ping and the 5 calls of the first run succeed; every call after them fails
    faults = Faults(script=["ok"] * 6, server_error=1.0, retry_headers=FAST)
    with ScriptedServer(faults=faults) as srv:
        recipe = _eval_recipe(tmp_path, srv.base_url, tiny_model_dir)
        with pytest.raises(EvalIncomplete, match=r"stopped at run 'cot' .* 2 of 3 runs that finished"):
            run_eval(recipe)
        report = tmp_path / "reports" / "partial" / "report.md"
        text = report.read_text()
        assert "**Incomplete.** Run **cot** failed" in text and "| direct |" in text and "| cot |" not in text
        done = run_sql(recipe.store, "SELECT run_name FROM eval_runs_done ORDER BY 1")["run_name"].to_list()
        assert done == ["direct", f"slm_cot ({tiny_model_dir.rsplit('/', 1)[-1]})"]
        assert run_sql(recipe.store, "SELECT status FROM runs WHERE kind = 'eval'")["status"].to_list() == ["failed"]

        srv.faults = Faults()  # the endpoint recovers; the same recipe runs again
        before, pings = len(srv.requests), len(srv.pings)
        result = run_eval(recipe)
        assert len(srv.requests) - before == len(QUESTIONS)  # the cot run only: the rest reused
        assert len(srv.pings) == pings + 1
    text = report.read_text()
    assert result["report"] == str(report) and "Incomplete" not in text and "| cot |" in text
    rows = run_sql(recipe.store, "SELECT run_name, n FROM eval_metrics WHERE dataset = 'geo-test' ORDER BY 1")
    assert rows.to_dicts()[:2] == [{"run_name": "cot", "n": 5}, {"run_name": "direct", "n": 5}]


def test_another_eval_reuses_a_finished_run_with_the_same_settings_and_reruns_a_changed_one(tmp_path,
                                                                                         tiny_model_dir):
    """A second recipe (another name, other run names: an sft.seeds read that re-reads a model) reuses each run that
    an earlier eval finished with the same strategy, SLM weights, endpoint, settings and questions; a changed
    setting runs again."""
    from seekhelp.evaluation.harness import run_eval

    with ScriptedServer() as srv:
        first = _eval_recipe(tmp_path, srv.base_url, tiny_model_dir)
        run_eval(first)
        assert len(srv.requests) == 2 * len(QUESTIONS)
        second = replace(first, name="again", runs=[replace(r, name=f"{r.name} again") for r in first.runs])
        second.runs[1] = replace(second.runs[1], guard="off")  # a changed setting: this run only goes again
        assert second.eval_id != first.eval_id
        run_eval(second)
        assert len(srv.requests) == 3 * len(QUESTIONS)
    rows = run_sql(first.store, "SELECT eval_id, run_name, em FROM eval_metrics WHERE dataset = 'geo-test' "
                   "ORDER BY run_name").to_dicts()
    by_eval = {(r["eval_id"], r["run_name"]): r["em"] for r in rows}
    assert by_eval[(second.eval_id, "direct again")] == by_eval[(first.eval_id, "direct")]
    ids = run_sql(first.store, "SELECT eval_id, trajectory_ids FROM eval_runs_done WHERE run_name LIKE 'direct%' "
                  "ORDER BY eval_id").to_dicts()
    assert len(ids) == 2 and sorted(ids[0]["trajectory_ids"]) == sorted(ids[1]["trajectory_ids"])
    text = (tmp_path / "reports" / "again" / "report.md").read_text()
    assert "| direct again |" in text and "| cot again |" in text


def test_a_run_that_other_code_generated_is_not_reused(tmp_path, tiny_model_dir, monkeypatch):
    """The reuse key holds a hash of the package's files: after a code change (an upgrade, a fixed retrieval) another
    eval with the same settings generates its runs again."""
    from seekhelp.evaluation import reuse
    from seekhelp.evaluation.harness import run_eval

    assert reuse.code_key() == reuse.code_key() and len(reuse.code_key()) == 16
    with ScriptedServer() as srv:
        first = _eval_recipe(tmp_path, srv.base_url, tiny_model_dir)
        run_eval(first)
        n = len(srv.requests)
        monkeypatch.setattr(reuse, "code_key", lambda: "another-version")
        run_eval(replace(first, name="upgraded", runs=[replace(r, name=f"{r.name} 2") for r in first.runs]))
        assert len(srv.requests) == 2 * n


def test_a_regenerated_run_keeps_the_earlier_evals_trajectories(tmp_path, tiny_model_dir, monkeypatch):
    """A run regenerated under new code (or new weights at the same path) stores new trajectories beside the old
    ones: the earlier eval's `eval_runs_done` still points at what it measured."""
    from seekhelp.evaluation import reuse
    from seekhelp.evaluation.harness import run_eval

    def ids(recipe):
        rows = run_sql(recipe.store, f"SELECT trajectory_ids FROM eval_runs_done WHERE eval_id = '{recipe.eval_id}'")
        return {i for row in rows["trajectory_ids"] for i in row}

    with ScriptedServer() as srv:
        first = _eval_recipe(tmp_path, srv.base_url, tiny_model_dir)
        run_eval(first)
        monkeypatch.setattr(reuse, "code_key", lambda: "another-version")
        upgraded = replace(first, name="upgraded")
        run_eval(upgraded)
    old, new = ids(first), ids(upgraded)
    assert old and new and not old & new
    stored = set(run_sql(first.store, "SELECT id FROM trajectories")["id"])
    assert old | new <= stored


def test_eval_stops_before_any_run_on_a_wrong_model_id(tmp_path, tiny_model_dir):
    from seekhelp.evaluation.harness import run_eval

    with ScriptedServer(models=["other"]) as srv:
        recipe = _eval_recipe(tmp_path, srv.base_url, tiny_model_dir)
        t0 = time.perf_counter()
        with pytest.raises(EndpointError, match="endpoints.up: .*'scripted' is not served there"):
            run_eval(recipe)
    assert time.perf_counter() - t0 < 30
    assert run_sql(recipe.store, "SELECT count(*) AS n FROM trajectories")["n"][0] == 0


def test_a_chunk_whose_calls_all_failed_stops_the_llm_stage_and_bad_replies_do_not():
    from pipelines.resumable import stop_if_failed_alike

    gone = "no generation (APIConnectionError: Connection error.)"
    stop_if_failed_alike("LLM judge", [gone, gone, "bad json", gone], 4)  # mixed: recorded only
    stop_if_failed_alike("LLM judge", [gone] * 3, 3)  # too few to tell
    stop_if_failed_alike("LLM judge", [gone] * 3, 4)  # one item succeeded
    # a small judge that never writes valid JSON answered every call: its replies are failures, not an outage
    stop_if_failed_alike("LLM judge", ["no JSON verdict with a 'leak' key found"] * 8, 8)
    with pytest.raises(EndpointError, match=r"LLM judge: all 4 items of a chunk failed alike \(no generation"):
        stop_if_failed_alike("LLM judge", [gone] * 4, 4)
