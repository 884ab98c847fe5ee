"""Retries on 429 / 500 / timeouts / malformed bodies against a real local HTTP server: no episode is lost, and the
server's Retry-After is what the client waits."""

import asyncio
import time

import pytest

from seekhelp import protocol
from seekhelp.backends.base import GenParams
from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend, restore_stop
from seekhelp.backends.scripted_server import Faults, ScriptedServer
from seekhelp.records import Question
from seekhelp.runtime import Runtime, RuntimeConfig
from tests.fakes import ScriptedSLM

pytestmark = pytest.mark.openai_client  # make test-compat: both ends of the openai SDK range


def _cfg(server, **kw):
    base = dict(base_url=server.base_url, model="scripted", timeout_s=0.5)
    return EndpointConfig(**{**base, **kw})


FAST = {"retry-after-ms": "10"}  # the server asks for 10 ms between tries: the tests stay fast because it is honoured


def test_scripted_faults_are_retried_and_every_call_succeeds():
    faults = Faults(script=["429", "500", "slow", "bad", "429"], slow_s=1.0, retry_headers=FAST)
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

    faults = Faults(rate_limit=0.3, server_error=0.1, slow=0.05, malformed=0.05, slow_s=1.0, seed=7,
                    retry_headers=FAST)
    qs = [Question(question=f"Where does my friend number {i} live?", answers=["Lima"]) for i in range(24)]
    with ScriptedServer(faults=faults) as server:
        backend = OpenAIBackend(_cfg(server, max_retries=10, max_concurrency=8))
        trajs = Runtime(ScriptedSLM(slm), backend, RuntimeConfig(guard="off")).run(qs)
    assert len(trajs) == 24
    assert all(t.stop_reason == "answer" and t.final_answer == "Lima" for t in trajs)
    assert backend.stats["retries"] > 0 and backend.stats["failures"] == 0
    assert server.counts["429"] + server.counts["500"] > 0


def test_a_call_that_never_succeeds_is_recorded_not_raised():
    with ScriptedServer(faults=Faults(server_error=1.0, retry_headers=FAST)) as server:
        backend = OpenAIBackend(_cfg(server, max_retries=2))
        (out,) = asyncio.run(backend.generate([[{"role": "user", "content": "x"}]], GenParams()))
    assert not out.ok and "InternalServerError" in out.error and out.retries == 2


def _gap_after_429(headers: dict[str, str]) -> tuple[float, object]:
    """Seconds between a 429 (sent with `headers`) and the retry that follows, and the completion."""
    with ScriptedServer(faults=Faults(script=["429"], retry_headers=headers)) as server:
        backend = OpenAIBackend(_cfg(server, max_retries=2))
        (out,) = asyncio.run(backend.generate([[{"role": "user", "content": "x"}]], GenParams()))
        times = list(server.request_times)
    assert len(times) == 2 and out.ok and out.retries == 1 and backend.stats["retries"] == 1
    return times[1] - times[0], out


def test_retry_after_is_honoured():
    # the SDK's own first backoff is 0.375-0.5 s: a wait of 2 s, or of 50 ms, can only come from the header
    slow, out = _gap_after_429({"Retry-After": "2"})
    assert 1.9 <= slow < 3.0, slow
    assert out.latency_s >= 1.9  # the latency of a call includes the waits of its retries
    fast, _ = _gap_after_429({"retry-after-ms": "50"})
    assert 0.04 <= fast < 0.3, fast
    t0 = time.perf_counter()
    default, _ = _gap_after_429({})
    assert 0.3 <= default < 1.0 and time.perf_counter() - t0 < 2.0, default


def test_a_malformed_body_is_retried_from_the_same_budget():
    with ScriptedServer(faults=Faults(script=["bad"] * 10)) as server:
        backend = OpenAIBackend(_cfg(server, max_retries=2))
        (out,) = asyncio.run(backend.generate([[{"role": "user", "content": "x"}]], GenParams()))
    assert not out.ok and out.error.startswith("malformed response") and out.retries == 2
    assert server.counts["bad"] == 3


def test_a_client_error_is_not_retried():
    with ScriptedServer(faults=Faults(script=[])) as server:
        backend = OpenAIBackend(_cfg(server, base_url=server.base_url.replace("/v1", "/nope")))
        (out,) = asyncio.run(backend.generate([[{"role": "user", "content": "x"}]], GenParams()))
    assert not out.ok and out.retries == 0


def test_restore_stop_closes_the_tag_the_server_dropped():
    assert restore_stop("a <information>b", ["</need>", "</information>"]) == "a <information>b</information>"
    assert restore_stop("<need>x</need>", ["</need>"]) == "<need>x</need>"
    assert restore_stop("plain", ["</need>"]) == "plain"
