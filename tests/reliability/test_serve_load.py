"""`seekhelp serve` under load with a flaky upstream: 200 requests from 32 concurrent clients, none lost, none hung.

The upstream fails as in the rest of this suite (429, 500, replies slower than the client's timeout, malformed
bodies); the backend retries twice, so most requests are answered and some fail for good. Every request must end,
within its client's timeout, as a 200 with the answer or an OpenAI-style error naming the cause (502 after the
upstream's retries; 400 for the malformed bodies mixed into the traffic), and the server must be healthy after.
"""

import asyncio
import time

import httpx
import openai

from seekhelp import protocol
from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
from seekhelp.backends.scripted_server import Faults, ScriptedServer
from seekhelp.runtime import RuntimeConfig
from seekhelp.serve import ServeSettings, create_app, serving
from seekhelp.strategies import StrategyContext
from tests.fakes import ScriptedSLM

N_REQUESTS, N_CLIENTS, CLIENT_TIMEOUT_S = 200, 32, 60.0
LABEL = "The user's friend Ottoline Brackwater lives in Peru."


def slm_reply(conv: list[dict]) -> str:
    if any(m["role"] == "user" and m["content"].startswith("<agent-reply>") for m in conv):
        return protocol.render_slm_turn("The notes name it.", protocol.ANSWER, "Lima")
    return protocol.render_slm_turn("A public fact.", protocol.MESSAGE, "What is the capital of Peru?")


class ComputingSLM(ScriptedSLM):
    """Scripted replies that take a little time per batch, as a real model does."""

    async def generate(self, conversations, params):
        await asyncio.sleep(0.05)
        return await super().generate(conversations, params)


async def _traffic(root: str) -> list[tuple[int, str]]:
    """(status, what) per request: the answer, or the error code and message."""
    jobs: asyncio.Queue[int] = asyncio.Queue()
    for i in range(N_REQUESTS):
        jobs.put_nowait(i)
    out: list[tuple[int, str]] = []

    async def client_loop(c: openai.AsyncOpenAI, h: httpx.AsyncClient):
        while not jobs.empty():
            i = jobs.get_nowait()
            if i % 25 == 7:  # a malformed body now and then
                r = await h.post(root + "/v1/chat/completions", content=b"{oops", timeout=CLIENT_TIMEOUT_S)
                out.append((r.status_code, r.json()["error"]["code"]))
                continue
            try:
                resp = await c.chat.completions.create(
                    model="seekhelp/dynamic", extra_body={"seekhelp": {"privacy_items": [LABEL]}},
                    messages=[{"role": "user", "content": f"My friend Ottoline Brackwater lives in Peru ({i}). "
                                                          "What is its capital?"}])
                out.append((200, resp.choices[0].message.content))
            except openai.APIStatusError as e:
                out.append((e.status_code, f"{e.body['code']}: {e.body['message']}"))

    async with openai.AsyncOpenAI(base_url=root + "/v1", api_key="-", max_retries=0,
                                  timeout=CLIENT_TIMEOUT_S) as c, httpx.AsyncClient() as h:
        await asyncio.gather(*(client_loop(c, h) for _ in range(N_CLIENTS)))
    return out


def test_200_requests_from_32_clients_against_a_flaky_upstream():
    faults = Faults(rate_limit=0.2, server_error=0.1, slow=0.05, malformed=0.05, slow_s=1.0, seed=3)
    with ScriptedServer(faults=faults) as upstream:
        llm = OpenAIBackend(EndpointConfig(base_url=upstream.base_url, model="scripted", max_retries=2,
                                           timeout_s=0.5, max_concurrency=16))
        slm = ComputingSLM(slm_reply)
        app = create_app(StrategyContext(slm=slm, llm=llm, config=RuntimeConfig(guard="block")), ServeSettings())
        with serving(app) as root:
            t0 = time.perf_counter()
            out = asyncio.run(asyncio.wait_for(_traffic(root), timeout=300))
            wall = time.perf_counter() - t0
            health = httpx.get(root + "/health", timeout=5).json()
            upstream.faults = Faults()  # the upstream recovers: the server answers again at once
            after = httpx.post(root + "/v1/chat/completions", timeout=30,
                               json={"messages": [{"role": "user", "content": "Capital of Peru?"}]})
    statuses = [s for s, _ in out]
    assert len(out) == N_REQUESTS, f"{N_REQUESTS - len(out)} requests never ended"
    assert set(statuses) <= {200, 400, 502}, sorted(set(statuses))
    assert all(what == "Lima" for s, what in out if s == 200)
    assert all(what == "invalid_json" for s, what in out if s == 400) and statuses.count(400) == 8
    assert all(what.startswith("upstream_failed: the upstream LLM failed") for s, what in out if s == 502)
    assert statuses.count(200) > N_REQUESTS // 2 and statuses.count(502) > 0  # the faults did bite
    assert upstream.counts["429"] and upstream.counts["500"] and upstream.counts["bad"] and upstream.counts["slow"]
    assert health["status"] == "ok" and health["pending"] == 0 and health["inflight_batches"] == 0
    assert health["batches"] < health["requests"]  # the load was batched, not served one by one
    assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"] == "Lima"
    assert not any("Ottoline" in t or "Brackwater" in t for t in upstream.user_texts())
    print(f"load: {statuses.count(200)} answered, {statuses.count(502)} upstream failures, "
          f"{statuses.count(400)} bad bodies in {wall:.1f} s; {health['batches']} batches, "
          f"largest {health['largest_batch']}")
