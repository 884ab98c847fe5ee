"""Every strategy end to end on the real embedded model against a real `transformers serve` endpoint."""

import asyncio
import json
import os
import subprocess
import sys

import pytest

from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
from seekhelp.records import Question
from seekhelp.runtime import RuntimeConfig
from seekhelp.strategies import STRATEGIES, StrategyContext, redact_question, run_strategy

pytestmark = pytest.mark.integration

Q = Question(question="My cousin Leo lives in the capital of Japan. In which city does my cousin live?",
             answers=["Tokyo"], privacy_items=["The user's cousin Leo lives in the capital of Japan."])
LEAKS_BY_DESIGN = {"llm_direct", "llm_cot", "cascade", "plan_execute"}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_runs_live(strategy, embedded_endpoint, embedded_slm):
    llm = OpenAIBackend(EndpointConfig(base_url=embedded_endpoint.base_url, model=embedded_endpoint.model,
                                       label=embedded_endpoint.label))
    ctx = StrategyContext(slm=embedded_slm, llm=llm,
                          config=RuntimeConfig(slm_max_new_tokens=48, llm_max_new_tokens=48))
    (t,) = asyncio.run(run_strategy(strategy, ctx, [Q]))
    assert t.strategy == strategy and t.turns and t.stop_reason
    assert all(turn.prompt_tokens > 0 for turn in t.turns if turn.role in ("slm", "llm"))
    assert any(turn.completion_tokens > 0 for turn in t.turns)
    if strategy in ("llm_direct", "llm_cot", "plan_execute"):
        assert t.n_llm_calls == 1 and t.tokens("llm")[0] > 0
    assert t.raw_question_sent == (strategy in LEAKS_BY_DESIGN and (strategy != "cascade" or t.n_llm_calls > 0))
    if strategy == "redact_direct":  # the label-free redactor finds no phone, mail or address here: sent unchanged
        assert t.messages == [redact_question(Q, "pii")] == [Q.question] and t.attempted == t.messages
    elif strategy not in LEAKS_BY_DESIGN:  # what left the device never holds the question or a private fact verbatim
        for sent in t.messages:
            assert Q.question not in sent and all(p not in sent for p in Q.privacy_items)


def test_cli_ask_prints_a_trajectory_json(embedded_endpoint, smollm2_dir):
    cmd = [sys.executable, "-m", "seekhelp.cli", "ask", "--question", Q.question, "--private", Q.privacy_items[0],
           "--strategy", "llm_cot", "--llm-base-url", embedded_endpoint.base_url,
           "--llm-model", embedded_endpoint.model,
           "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": "."})
    assert out.returncode == 0, out.stderr[-2000:]
    traj = json.loads(out.stdout)
    assert traj["strategy"] == "llm_cot" and traj["n_llm_calls"] == 1
    assert traj["turns"][0]["prompt_tokens"] > 0 and traj["turns"][0]["completion_tokens"] > 0


def test_cli_rejects_an_unknown_strategy_in_one_line():
    out = subprocess.run([sys.executable, "-m", "seekhelp.cli", "ask", "--question", "x", "--strategy", "nope"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": "."})
    assert out.returncode == 2 and "Traceback" not in out.stderr and "nope" in out.stderr
