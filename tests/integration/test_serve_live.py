"""`seekhelp serve` on the real embedded SmolLM2, driven by the official `openai` client (plain and streaming).

The upstream is a local OpenAI-compatible server that records every body it receives (grounding on, as in
`seekhelp ask`): whatever the 135M model chose to send, the question itself and the labelled private fact must
never be among those bytes.
"""

import asyncio

import openai
import pytest

from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
from seekhelp.backends.scripted_server import ScriptedServer
from seekhelp.knowledge import KnowledgeBase, grounder
from seekhelp.runtime import RuntimeConfig
from seekhelp.serve import ServeSettings, create_app, serving
from seekhelp.strategies import StrategyContext

pytestmark = pytest.mark.integration

QUESTION = "My cousin Aurelia Vantongeren lives in Peru. What is the capital of the country where she lives?"
LABEL = "The user's cousin Aurelia Vantongeren lives in Peru."


@pytest.fixture(scope="module")
def live_proxy(embedded_slm):
    with ScriptedServer() as upstream:
        llm = OpenAIBackend(EndpointConfig(base_url=upstream.base_url, model="scripted"))
        ctx = StrategyContext(slm=embedded_slm, llm=llm, grounder=grounder(KnowledgeBase.from_geonames(), k=3),
                              config=RuntimeConfig(slm_max_new_tokens=48, guard="block"))
        with serving(create_app(ctx, ServeSettings(batch_window_ms=200))) as root:
            yield openai.OpenAI(base_url=root + "/v1", api_key="-", max_retries=0, timeout=300), upstream, root


def _never_received(upstream) -> None:
    received = "\n".join(upstream.user_texts())
    assert QUESTION not in received and LABEL not in received and "Vantongeren" not in received


@pytest.mark.parametrize("model", ["seekhelp/dynamic", "seekhelp/static_rewrite"])
def test_plain_completion_live(live_proxy, model):
    c, upstream, _ = live_proxy
    resp = c.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                     extra_body={"seekhelp": {"privacy_items": [LABEL]}})
    audit = resp.model_extra["seekhelp"]
    assert resp.object == "chat.completion" and isinstance(resp.choices[0].message.content, str)
    assert audit["slm"] == "smollm2-135m" and audit["tokens"]["slm"]["completion"] > 0 and audit["stop_reason"]
    if model.endswith("static_rewrite"):  # always one request: the audit shows exactly what left the SLM
        assert len(audit["upstream"]) == 1
        sent, received = audit["upstream"][0]["sent"], [m["content"] for b in upstream.requests for m in b["messages"]]
        # a rewrite that names no place is answered by the grounded endpoint's <need> rule, never by the server
        assert (sent in received) == (grounder(KnowledgeBase.from_geonames()).missing(sent) is None)
    _never_received(upstream)


def test_streaming_live(live_proxy):
    c, upstream, _ = live_proxy
    chunks = list(c.chat.completions.create(model="seekhelp/dynamic", stream=True,
                                            messages=[{"role": "user", "content": QUESTION}],
                                            extra_body={"seekhelp": {"privacy_items": [LABEL]}}))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason
    assert chunks[-1].model_extra["seekhelp"]["slm"] == "smollm2-135m"
    _never_received(upstream)


def test_concurrent_clients_share_batches_live(live_proxy, embedded_slm):
    _, upstream, root = live_proxy
    before = dict(embedded_slm.stats)

    async def burst():
        async with openai.AsyncOpenAI(base_url=root + "/v1", api_key="-", max_retries=0, timeout=300) as c:
            return await asyncio.gather(*(c.chat.completions.create(
                model="seekhelp/dynamic", messages=[{"role": "user", "content": f"{QUESTION} ({i})"}],
                extra_body={"seekhelp": {"privacy_items": [LABEL]}}) for i in range(8)))

    resps = asyncio.run(burst())
    assert len(resps) == 8 and max(r.model_extra["seekhelp"]["batch_size"] for r in resps) > 1
    assert embedded_slm.stats["batches"] - before["batches"] < embedded_slm.stats["calls"] - before["calls"]
    _never_received(upstream)
