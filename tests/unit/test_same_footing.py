"""Every strategy on the same footing: the SLM reads the question alone, no privacy label reaches any prompt, and
every call to a grounded endpoint is grounded on exactly the text that call sends. Also: privacy is measured on
what the policy tried to send, so a leaky policy scores above 0 even behind a blocking guard."""

import asyncio
import json

import pytest

from seekhelp import protocol
from seekhelp.backends.grounded import grounding_block
from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
from seekhelp.backends.scripted_server import ScriptedServer
from seekhelp.evaluation import aggregate
from seekhelp.prompts import load_prompt
from seekhelp.records import Question
from seekhelp.runtime import Runtime, RuntimeConfig
from seekhelp.strategies import STRATEGIES, StrategyContext, redact_question, run_strategy
from tests.fakes import ScriptedSLM

# The labels hold details the question does not (a surname, a date, a job, a town): if any of them shows up in a
# prompt, a label was rendered into it.
Q = Question("My cousin Ana moved to Peru and I will visit her in its capital. Which city will I visit?", ["Lima"],
             ["The user's cousin Ana Quispe-Villanueva was born on 3 March 1990.",
              "The user's cousin works as a nurse in Cusco."])
LABEL_ONLY = ["Quispe", "Villanueva", "1990", "nurse", "Cusco", *Q.privacy_items]
RAW = {"llm_direct", "llm_cot", "cascade", "plan_execute"}  # forward the question itself, by design


def grounder(text: str) -> list[str]:
    return [f"note for <{text[:60]}>"]


def slm_reply(conv: list[dict]) -> str:
    system = conv[0]["content"]
    if system == load_prompt("slm_rewrite"):
        return "<message>What is the capital of Peru?</message>"
    if system == load_prompt("slm_confident"):
        return "<think>not sure</think>\n<answer>Cusco?</answer>\n<confidence>10</confidence>"
    replied = any(m["role"] == "user" and m["content"].startswith("<agent-reply>") for m in conv)
    if system == load_prompt("slm_dynamic") and not replied:
        return protocol.render_slm_turn("I need a public fact.", "message", "What is the capital of Peru?")
    return protocol.render_slm_turn("The notes settle it.", "answer", "Lima")


def llm_reply(messages: list[dict]) -> str:
    return "Reasoning.\n<information>The capital of Peru is Lima.</information>"


def _run(strategy: str):
    slm = ScriptedSLM(slm_reply)
    seen: list[list[dict]] = []
    inner = slm.reply
    slm.reply = lambda conv: (seen.append(conv), inner(conv))[1]
    with ScriptedServer(reply=llm_reply) as server:
        llm = OpenAIBackend(EndpointConfig(base_url=server.base_url, model="scripted"))
        ctx = StrategyContext(slm=slm, llm=llm, config=RuntimeConfig(guard="block"), grounder=grounder)
        (traj,) = asyncio.run(run_strategy(strategy, ctx, [Q]))
        return traj, seen, list(server.requests)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_label_reaches_any_prompt_and_every_llm_call_is_grounded_on_its_own_text(strategy):
    traj, slm_prompts, requests = _run(strategy)
    assert bool(slm_prompts) == (strategy not in ("llm_direct", "llm_cot", "redact_direct")), "who runs the SLM"
    for conv in slm_prompts:
        assert conv[1] == {"role": "user", "content": Q.question} or Q.question in conv[1]["content"]
        blob = json.dumps(conv, ensure_ascii=False)
        assert not [s for s in LABEL_ONLY if s in blob], (strategy, conv)
    for body in requests:
        blob = json.dumps(body["messages"], ensure_ascii=False)
        assert not [s for s in LABEL_ONLY if s in blob], (strategy, body)
        user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        system = body["messages"][0]
        assert system["role"] == "system" and system["content"].endswith(grounding_block(grounder(user)))
        if strategy in RAW:
            assert user == Q.question  # the raw question, as the user wrote it: never the label list
        elif strategy == "redact_direct":  # the question through the label-free anonymizer: it sees no labels
            assert user == redact_question(Q, "pii")
        else:
            assert Q.question not in blob and "Ana" not in blob
    expected_calls = {"slm_cot": 0}.get(strategy, 1)
    assert len(requests) == expected_calls == traj.n_llm_calls, strategy
    assert [m for m in traj.messages] == [[m["content"] for m in b["messages"] if m["role"] == "user"][-1]
                                          for b in requests]


def test_same_llm_text_gets_the_same_grounding_whatever_the_strategy():
    systems = {}
    for strategy in ("dynamic", "tool_llm", "static_rewrite"):
        _, _, requests = _run(strategy)
        user = [m["content"] for m in requests[0]["messages"] if m["role"] == "user"][-1]
        assert user == "What is the capital of Peru?"
        systems[strategy] = requests[0]["messages"][0]["content"].split("\n\n")[-1]
    assert len(set(systems.values())) == 1, systems  # the grounding block is identical for the same text


def test_a_leaky_policy_scores_above_zero_behind_a_blocking_guard():
    """The leak metric reads what the policy tried to send, so the guard cannot hide a leaky policy."""
    def leaky(conv):
        if any(m["content"].startswith("<agent-reply>") for m in conv if m["role"] == "user"):
            return protocol.render_slm_turn("fine", "answer", "Lima")
        return protocol.render_slm_turn("ask", "message", "Ana lives in Peru. What is its capital?")

    qs = [Q, Question("My sister Maria visits Chile. What is its capital?", ["Santiago"],
                      ["The user's sister Maria Rojas visits Chile."])]
    with ScriptedServer(reply=llm_reply) as server:
        llm = OpenAIBackend(EndpointConfig(base_url=server.base_url, model="scripted"))
        trajs = Runtime(ScriptedSLM(leaky), llm, RuntimeConfig(guard="block")).run(qs)
        assert len(server.requests) == 1  # only Maria's question sent it (it names nobody of hers)
    m = aggregate.run_metrics(trajs, {q.id: q for q in qs}, {})
    assert m["priv_sample"] == 50.0 and m["priv_sent"] == 0.0  # "Ana" names the user's cousin; Maria's is clean
    assert trajs[0].attempted[0] == "Ana lives in Peru. What is its capital?" and trajs[0].messages == []


def test_redact_then_ask_sends_the_masked_question_and_is_measured_on_it():
    """The oracle redactor masks what the labels name; the label-free one only what it can see. Either way the leak
    metric reads the text the redactor let through, as for any policy."""
    q = Question("My cousin Ana Quispe lives at 12 Calle Sol in Lima, call her on +51 912 345 678. Which country?",
                 ["Peru"], ["The user's cousin Ana Quispe lives at 12 Calle Sol in Lima.",
                            "The user's cousin's phone number is +51 912 345 678."])
    oracle, pii = redact_question(q, "labels"), redact_question(q, "pii")
    assert "Ana" not in oracle and "912" not in oracle and "[private]" in oracle
    assert "912 345" not in pii and "Ana" in pii  # patterns catch the phone; a lone name needs Presidio
    with ScriptedServer(reply=llm_reply) as server:
        llm = OpenAIBackend(EndpointConfig(base_url=server.base_url, model="scripted"))
        trajs = {}
        for redactor in ("labels", "pii"):
            ctx = StrategyContext(slm=ScriptedSLM(slm_reply), llm=llm, config=RuntimeConfig(guard="off"),
                                  redactor=redactor)
            (trajs[redactor],) = asyncio.run(run_strategy("redact_direct", ctx, [q]))
        assert [b["messages"][-1]["content"] for b in server.requests] == [oracle, pii]
    assert trajs["labels"].id != trajs["pii"].id and trajs["labels"].attempted == [oracle]
    m = {r: aggregate.run_metrics([t], {q.id: q}, {}) for r, t in trajs.items()}
    assert m["labels"]["priv_sample"] == 0.0 and m["pii"]["priv_sample"] == 100.0
