"""`seekhelp serve` driven by the official `openai` client: plain, streaming, batching, privacy, errors, auth.

The SLM is scripted (it asks one objective question, then answers from the reply), the upstream is a real local
OpenAI-compatible server that records every body it receives, so the privacy assertions are about bytes that
actually arrived upstream.
"""

import asyncio
import contextlib
import json
import threading

import httpx
import openai
import pytest

from seekhelp import protocol
from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
from seekhelp.backends.scripted_server import Faults, ScriptedServer
from seekhelp.runtime import RuntimeConfig
from seekhelp.serve import ServeSettings, create_app, serving
from seekhelp.strategies import StrategyContext
from tests.fakes import ScriptedSLM

pytestmark = pytest.mark.openai_client  # make test-compat: both ends of the openai SDK range

QUESTION = "My cousin Aurelia Vantongeren lives in Peru; which city is its capital?"
LABEL = "The user's cousin Aurelia Vantongeren lives in Peru."


def asks_then_answers(conv: list[dict]) -> str:
    if any(m["role"] == "user" and m["content"].startswith("<agent-reply>") for m in conv):
        return protocol.render_slm_turn("The notes name it.", protocol.ANSWER, "Lima")
    return protocol.render_slm_turn("I need a public fact.", protocol.MESSAGE, "What is the capital of Peru?")


def leaks_the_label(conv: list[dict]) -> str:
    if any(m["role"] == "user" and m["content"].startswith("<agent-reply>") for m in conv):
        return protocol.render_slm_turn("Withheld; answer alone.", protocol.ANSWER, "Lima")
    return protocol.render_slm_turn("Ask plainly.", protocol.MESSAGE, f"{LABEL} What is its capital?")


def _llm(server, **kw) -> OpenAIBackend:
    cfg = dict(base_url=server.base_url, model="scripted", timeout_s=2.0)
    return OpenAIBackend(EndpointConfig(**{**cfg, **kw}))


@contextlib.contextmanager
def proxy(slm_reply=asks_then_answers, faults=None, guard="block", llm_kw=None, **settings):
    with ScriptedServer(faults=faults) as upstream:
        slm = ScriptedSLM(slm_reply)
        ctx = StrategyContext(slm=slm, llm=_llm(upstream, **(llm_kw or {})), config=RuntimeConfig(guard=guard))
        app = create_app(ctx, ServeSettings(**settings))
        with serving(app) as root:
            yield root, upstream, slm, app


def client(root, key="-") -> openai.OpenAI:
    return openai.OpenAI(base_url=root + "/v1", api_key=key, max_retries=0, timeout=30)


def _ask(c, **kw):
    return c.chat.completions.create(model=kw.pop("model", "seekhelp/dynamic"),
                                     messages=[{"role": "user", "content": QUESTION}], **kw)


def test_plain_completion_with_audit_and_nothing_private_upstream():
    with proxy() as (root, upstream, _, _):
        resp = _ask(client(root), extra_body={"seekhelp": {"privacy_items": [LABEL]}})
    assert resp.object == "chat.completion" and resp.choices[0].message.content == "Lima"
    assert resp.choices[0].finish_reason == "stop" and resp.usage.total_tokens > 0
    audit = resp.model_extra["seekhelp"]
    assert audit["strategy"] == "dynamic" and audit["stop_reason"] == "answer"
    assert [u["sent"] for u in audit["upstream"]] == ["What is the capital of Peru?"]
    assert "<information>" in audit["upstream"][0]["reply"] and audit["tokens"]["llm"]["prompt"] > 0
    assert len(upstream.requests) == 1
    sent = "\n".join(upstream.user_texts())
    assert QUESTION not in sent and "Aurelia" not in sent and "cousin" not in sent


def test_streaming_yields_the_answer_then_the_audit_and_done():
    with proxy() as (root, upstream, _, _):
        chunks = list(_ask(client(root), stream=True, extra_body={"seekhelp": {"privacy_items": [LABEL]}}))
        with httpx.stream("POST", root + "/v1/chat/completions", json={
                "model": "seekhelp/dynamic", "stream": True,
                "messages": [{"role": "user", "content": QUESTION}]}) as r:
            raw = [line for line in r.iter_lines() if line]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Lima"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["seekhelp"]["upstream"][0]["sent"] == "What is the capital of Peru?"
    assert raw[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in raw)
    assert "Aurelia" not in "\n".join(upstream.user_texts())


def test_the_guard_blocks_a_labelled_fact_and_the_audit_says_so():
    with proxy(slm_reply=leaks_the_label) as (root, upstream, _, _):
        resp = _ask(client(root), extra_body={"seekhelp": {"privacy_items": [LABEL]}})
    audit = resp.model_extra["seekhelp"]
    assert audit["guard"]["mode"] == "block" and audit["guard"]["actions"][0]["action"] == "blocked"
    assert not any("Aurelia" in t for t in upstream.user_texts())


def test_concurrent_requests_share_batched_slm_calls():
    n = 12
    with proxy(batch_window_ms=200) as (root, upstream, slm, app):
        c = client(root)
        out: list = [None] * n

        def one(i):
            out[i] = _ask(c).choices[0].message.content

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        stats = httpx.get(root + "/health").json()
    assert out == ["Lima"] * n
    assert stats["requests"] == n and stats["batches"] < n and stats["largest_batch"] > 1
    assert len(slm.batches) < 2 * n and max(slm.batches) > 1  # 2 SLM turns per episode, far fewer generate calls
    assert len(upstream.requests) == n


def test_strategies_are_models_and_unknown_models_are_404():
    with proxy() as (root, _, _, _):
        c = client(root)
        ids = [m.id for m in c.models.list().data]
        assert "seekhelp/dynamic" in ids and "seekhelp/slm_cot" in ids
        assert _ask(c, model="dynamic").model_extra["seekhelp"]["strategy"] == "dynamic"
        with pytest.raises(openai.NotFoundError) as e:
            _ask(c, model="gpt-17")
        assert e.value.body["code"] == "model_not_found"
        assert httpx.get(root + "/health").json()["status"] == "ok"


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_body"),
    (json.dumps({"model": "seekhelp/dynamic"}).encode(), 400, "invalid_messages"),
    (json.dumps({"messages": [{"role": "system", "content": "hi"}]}).encode(), 400, "invalid_messages"),
    (json.dumps({"messages": [{"role": "user", "content": "q"}], "seekhelp": {"privacy_items": "x"}}).encode(),
     400, "invalid_privacy_items"),
    (json.dumps({"messages": [{"role": "user", "content": "q"}], "model": "nope"}).encode(), 404,
     "model_not_found"),
    (b'{"messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}', 413, "too_large"),
])
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(body, status, code):
    with proxy(max_body_bytes=4096) as (root, _, _, _):
        r = httpx.post(root + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["code"] == code and err["message"] and err["type"]
        assert _ask(client(root)).choices[0].message.content == "Lima"


def test_upstream_failure_after_retries_is_a_502_with_the_audit():
    with proxy(faults=Faults(server_error=1.0), llm_kw={"max_retries": 1}) as (root, upstream, _, _):
        with pytest.raises(openai.APIStatusError) as e:
            _ask(client(root))
        assert e.value.status_code == 502 and e.value.body["code"] == "upstream_failed"
        assert "InternalServerError" in e.value.body["message"]
        assert len(upstream.requests) == 2  # the first try and one retry
        assert httpx.get(root + "/health").status_code == 200


def test_bearer_token_is_required_when_configured():
    with proxy(api_key="s3cret") as (root, _, _, _):
        with pytest.raises(openai.AuthenticationError):
            _ask(client(root, key="wrong"))
        r = httpx.post(root + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}]})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(root + "/health").status_code == 200  # health stays open for probes
        assert _ask(client(root, key="s3cret")).choices[0].message.content == "Lima"


def test_unknown_route_is_an_openai_404():
    with proxy() as (root, _, _, _):
        r = httpx.get(root + "/v1/nothing")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_the_tiny_model_serves_through_the_real_batched_backend(tiny_model_dir):
    from seekhelp.backends.local import TransformersBackend

    slm = TransformersBackend(tiny_model_dir, name="tiny")
    with ScriptedServer() as upstream:
        ctx = StrategyContext(slm=slm, llm=_llm(upstream), config=RuntimeConfig(slm_max_new_tokens=8))
        with serving(create_app(ctx, ServeSettings(batch_window_ms=300))) as root:
            async def burst():
                async with openai.AsyncOpenAI(base_url=root + "/v1", api_key="-", max_retries=0) as c:
                    return await asyncio.gather(*(c.chat.completions.create(
                        model="seekhelp/dynamic", messages=[{"role": "user", "content": f"{QUESTION} {i}"}],
                        extra_body={"seekhelp": {"privacy_items": [LABEL]}}) for i in range(6)))

            resps = asyncio.run(burst())
    assert len(resps) == 6 and all(r.model_extra["seekhelp"]["slm"] == "tiny" for r in resps)
    assert slm.stats["calls"] >= 6 and slm.stats["batches"] < slm.stats["calls"]
    assert not any("Aurelia" in t for t in upstream.user_texts())


def test_store_is_written_only_when_asked_and_every_request_is_its_own_episode(tmp_path):
    import duckdb

    from seekhelp.serve.store import ServedStore

    path = tmp_path / "served.duckdb"
    writer = ServedStore(path, {"what": "test"})
    with ScriptedServer() as upstream:
        ctx = StrategyContext(slm=ScriptedSLM(asks_then_answers), llm=_llm(upstream), config=RuntimeConfig())
        app = create_app(ctx, ServeSettings(), on_batch=writer.on_batch, on_shutdown=writer.aclose)
        with serving(app) as root:
            ids = {_ask(client(root)).id for _ in range(2)}  # the same question twice
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM trajectories").fetchone()[0] == 2 == len(ids)
        assert con.execute("SELECT kind, status FROM runs").fetchall() == [("serve", "ok")]
        assert con.execute("SELECT count(*) FROM turns WHERE role = 'llm'").fetchone()[0] == 2
    finally:
        con.close()


def test_engine_batches_pending_requests_by_strategy_and_fails_the_queue_on_stop():
    from seekhelp.records import Question
    from seekhelp.serve.engine import BatchEngine

    async def scenario():
        slm = ScriptedSLM(asks_then_answers)
        with ScriptedServer() as upstream:
            engine = BatchEngine(StrategyContext(slm=slm, llm=_llm(upstream), config=RuntimeConfig()),
                                 max_batch=8, window_s=0.05)
            await engine.start()
            qs = [Question(question=f"q{i}", answers=[]) for i in range(10)]
            served = await asyncio.gather(*(engine.submit("slm_cot" if i % 5 == 0 else "dynamic", q)
                                            for i, q in enumerate(qs)))
            late = asyncio.ensure_future(engine.submit("dynamic", qs[0]))
            await engine.stop()  # the worker is gone: a request still queued gets an error, not a hang
            with contextlib.suppress(RuntimeError):
                await asyncio.wait_for(late, 5)
        return served, engine.stats, late

    served, stats, late = asyncio.run(scenario())
    assert [s.trajectory.strategy for s in served] == ["slm_cot" if i % 5 == 0 else "dynamic" for i in range(10)]
    assert stats["batches"] == 2 and stats["largest_batch"] == 8  # 10 requests, max_batch 8
    assert len({s.trajectory.id for s in served}) == 10 and late.done()
