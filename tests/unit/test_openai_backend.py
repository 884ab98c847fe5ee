"""Retries on 429 / 500 / timeouts / malformed bodies against a real local HTTP server: no episode is lost."""

import asyncio

from seekhelp import protocol
from seekhelp.backends.base import GenParams
from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend, restore_stop
from seekhelp.backends.scripted_server import Faults, ScriptedServer
from seekhelp.records import Question
from seekhelp.runtime import Runtime, RuntimeConfig
from tests.fakes import ScriptedSLM


def _cfg(server, **kw):
    base = dict(base_url=server.base_url, model="scripted", backoff_s=0.01, backoff_max_s=0.05, timeout_s=0.5)
    return EndpointConfig(**{**base, **kw})


def test_scripted_faults_are_retried_and_every_call_succeeds():
    faults = Faults(script=["429", "500", "slow", "bad", "429"], slow_s=1.0)
    with ScriptedServer(faults=faults) as server:
        backend = OpenAIBackend(_cfg(server))
        outs = asyncio.run(backend.generate([[{"role": "user", "content": f"q{i}"}] for i in range(4)], GenParams()))
    assert all(o.ok and "<information>" in o.text for o in outs)
    assert sum(o.retries for o in outs) == 5
    assert backend.stats["retries"] == 5 and backend.stats["failures"] == 0
    assert server.counts["429"] == 2 and server.counts["500"] == 1 and server.counts["bad"] == 1


def test_random_faults_lose_no_episode():
    def slm(conv):
        if any(m["content"].startswith("<agent-reply>") for m in conv if m["role"] == "user"):
            return protocol.render_slm_turn("ok", "answer", "Lima")
        return protocol.render_slm_turn("ask", "message", "What is the capital of Peru?")

    faults = Faults(rate_limit=0.3, server_error=0.1, slow=0.05, malformed=0.05, slow_s=1.0, seed=7)
    qs = [Question(question=f"Where does my friend number {i} live?", answers=["Lima"]) for i in range(24)]
    with ScriptedServer(faults=faults) as server:
        backend = OpenAIBackend(_cfg(server, max_retries=10, max_concurrency=8))
        trajs = Runtime(ScriptedSLM(slm), backend, RuntimeConfig(guard="off")).run(qs)
    assert len(trajs) == 24
    assert all(t.stop_reason == "answer" and t.final_answer == "Lima" for t in trajs)
    assert backend.stats["retries"] > 0 and backend.stats["failures"] == 0
    assert server.counts["429"] + server.counts["500"] > 0


def test_a_call_that_never_succeeds_is_recorded_not_raised():
    with ScriptedServer(faults=Faults(server_error=1.0)) as server:
        backend = OpenAIBackend(_cfg(server, max_retries=2))
        (out,) = asyncio.run(backend.generate([[{"role": "user", "content": "x"}]], GenParams()))
    assert not out.ok and "InternalServerError" in out.error and out.retries == 2


def test_a_client_error_is_not_retried():
    with ScriptedServer(faults=Faults(script=[])) as server:
        backend = OpenAIBackend(_cfg(server, base_url=server.base_url.replace("/v1", "/nope")))
        (out,) = asyncio.run(backend.generate([[{"role": "user", "content": "x"}]], GenParams()))
    assert not out.ok and out.retries == 0


def test_restore_stop_closes_the_tag_the_server_dropped():
    assert restore_stop("a <information>b", ["</need>", "</information>"]) == "a <information>b</information>"
    assert restore_stop("<need>x</need>", ["</need>"]) == "<need>x</need>"
    assert restore_stop("plain", ["</need>"]) == "plain"
