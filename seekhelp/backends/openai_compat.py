"""Async client for any OpenAI-compatible chat endpoint (OpenAI, `vllm serve`, `transformers serve`).

Bounded concurrency, prompt/completion tokens recorded per call, and retries done by the `openai` SDK itself
(`max_retries`): it retries 408/409/429/5xx, timeouts and connection errors with exponential backoff and jitter,
and waits what the server asks for in `Retry-After` / `retry-after-ms`, which a hand-written loop got wrong. A 200
whose body is not a chat completion is the one case the SDK cannot see; it is retried here, from the same budget.
A call that still fails after the last retry comes back as a Completion with `error` set, never as an exception,
so one bad request never loses the other episodes of a batch, unless every call of a batch failed the same way:
then the endpoint is down or refuses us, and `generate` raises EndpointError instead of recording each row as
failed. `check()` is the preflight: one real call through the very client the run will use.

The client is built only through the SDK's own parameters (`timeout` as `openai.Timeout`, `max_retries`), never with
objects of the HTTP library underneath it: openai 1.x builds on httpx, newer releases on httpx2.
"""

import asyncio
import logging
import os
import time
from dataclasses import dataclass

import openai

from seekhelp.backends.base import Completion, GenParams, Message
from seekhelp.errors import SeekhelpError, one_line

log = logging.getLogger(__name__)



def _retried_by_sdk(error: Exception) -> bool:
    """Whether the SDK retries this kind of failure (so it failed only once its retries were spent)."""
    if isinstance(error, openai.APIConnectionError):  # APITimeoutError included
        return True
    status = getattr(error, "status_code", None)
    return status is not None and (status >= 500 or status in (408, 409, 429))


@dataclass
class EndpointConfig:
    base_url: str | None = None  # default: $SEEKHELP_LLM_BASE_URL, then $OPENAI_BASE_URL
    model: str | None = None  # default: $SEEKHELP_LLM_MODEL
    label: str | None = None  # name recorded in trajectories (default: the model name)
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never stored
    max_concurrency: int = 16
    max_retries: int = 5  # the SDK's retries per call (backoff 0.5 s doubling to 8 s, or the server's Retry-After)
    timeout_s: float = 120.0
    batch_failure_stop: int = 4  # a batch of at least this many calls that all fail alike raises (0: never)
    # fields sent with every request beside the OpenAI ones, as the server documents them. vLLM fills omitted
    # sampling fields from the checkpoint's generation config (Qwen3 2507: top_k 20), so say what is meant, e.g.
    # {top_k: -1, min_p: 0.0, chat_template_kwargs: {enable_thinking: false}}
    extra_body: dict | None = None


class EndpointError(SeekhelpError, ValueError):
    """An endpoint that cannot serve the run: unreachable, wrong model id, refused key, broken client (one line)."""


PREFLIGHT_MESSAGES = [{"role": "user", "content": "ping"}]  # the preflight's 1-token call (stand-ins log it apart)


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {one_line(e)[:240]}"


def restore_stop(text: str, stop: list[str] | None) -> str:
    """OpenAI-style servers drop the stop string; put a closing tag back when it is the one that stopped us."""
    if not stop:
        return text
    for s in stop:
        if s.startswith("</") and s.endswith(">"):
            opener = "<" + s[2:]
            if text.rfind(opener) > text.rfind(s):
                return text + s
    return text


class OpenAIBackend:
    """ChatBackend over the `openai` SDK's async client."""

    def __init__(self, config: EndpointConfig | None = None, client: openai.AsyncOpenAI | None = None):
        self.config = config or EndpointConfig()
        base_url = self.config.base_url or os.environ.get("SEEKHELP_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        model = self.config.model or os.environ.get("SEEKHELP_LLM_MODEL")
        if not model:
            raise EndpointError("LLM model name missing: set it in the recipe (llm.model), with --llm-model, or in "
                                "$SEEKHELP_LLM_MODEL")
        self.model = model
        self.name = self.config.label or model
        self.base_url = base_url
        self._injected = client
        self._client: openai.AsyncOpenAI | None = None
        self._sem: asyncio.Semaphore | None = None
        self._loop = None
        self.stats = {"calls": 0, "retries": 0, "failures": 0}

    def _bind_loop(self) -> None:
        """The HTTP pool and the semaphore belong to one event loop; make fresh ones for a new loop."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        key = os.environ.get(self.config.api_key_env) or "not-needed"
        self._client = self._injected or openai.AsyncOpenAI(
            base_url=self.base_url, api_key=key, max_retries=self.config.max_retries,
            timeout=openai.Timeout(self.config.timeout_s, connect=10.0))  # the SDK's own Timeout class
        self._sem, self._loop = asyncio.Semaphore(self.config.max_concurrency), loop

    @property
    def where(self) -> str:
        return f"LLM endpoint {self.name!r} at {self.base_url or '(default base URL)'}"

    async def generate(self, conversations: list[list[Message]], params: GenParams) -> list[Completion]:
        self._bind_loop()
        outs = list(await asyncio.gather(*(self._one(c, params) for c in conversations)))
        stop = self.config.batch_failure_stop
        if stop and len(outs) >= stop and all(o.error for o in outs) and len({o.error for o in outs}) == 1:
            raise EndpointError(f"{self.where}: all {len(outs)} calls of a batch failed alike ({outs[0].error}); "
                                "stopping instead of recording every row as failed")
        return outs

    async def acheck(self, timeout_s: float = 30.0) -> str:
        """The preflight: list the served models, then one 1-token chat completion, through this backend's own client.
        Raises EndpointError in one line naming the endpoint and the fix; returns what was checked."""
        try:
            self._bind_loop()
            client = self._client.with_options(max_retries=1, timeout=timeout_s)
        except Exception as e:  # an SDK that refuses our arguments: fail here, not after an hour of work
            raise EndpointError(f"{self.where}: the openai client could not be built ({_short(e)})") from e
        served: list[str] | None = None
        try:
            served = [m.id for m in (await client.models.list()).data]
        except openai.AuthenticationError as e:
            raise EndpointError(f"{self.where}: the API key was refused (set ${self.config.api_key_env})") from e
        except openai.APIConnectionError as e:
            raise EndpointError(f"{self.where}: not reachable ({_short(e)})") from e
        except openai.APIError:
            served = None  # no model listing (some servers lack it): the chat call below decides
        ping = self._client.with_options(timeout=timeout_s)  # the run's retries: a busy server's 429/5xx waited out
        for attempt in range(3):
            try:
                await ping.chat.completions.create(model=self.model, messages=PREFLIGHT_MESSAGES, max_tokens=1,
                                                   temperature=0.0, extra_body=self.config.extra_body or None)
                break
            except (openai.APIStatusError, openai.APIConnectionError) as e:
                if served is not None and self.model not in served:
                    raise EndpointError(f"{self.where}: model {self.model!r} is not served there (served: "
                                        f"{', '.join(served[:8]) or 'none'})") from e
                raise EndpointError(f"{self.where}: a one-token chat call failed ({_short(e)})") from e
            except Exception as e:  # a body that is not a chat completion (tried 3 times), or a bug under the SDK
                if attempt == 2:
                    raise EndpointError(f"{self.where}: no valid reply to a one-token chat call ({_short(e)})") from e
        return f"{self.where}: model {self.model!r} answers"

    def check(self, timeout_s: float = 30.0) -> str:
        """`acheck` from synchronous code (its own event loop; the HTTP pool is closed again)."""

        async def go() -> str:
            try:
                return await self.acheck(timeout_s)
            finally:
                await self.aclose()

        return asyncio.run(go())

    async def _one(self, messages: list[Message], params: GenParams) -> Completion:
        kwargs = dict(model=self.model, messages=messages, max_tokens=params.max_new_tokens,
                      temperature=params.temperature, top_p=params.top_p)
        if params.stop:
            kwargs["stop"] = params.stop[:4]  # the OpenAI API accepts at most four
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if self.config.extra_body:
            kwargs["extra_body"] = self.config.extra_body
        if params.json_schema is not None:
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "verdict", "schema": params.json_schema}}
        retries, last_error = 0, ""
        async with self._sem:
            while True:
                t0 = time.perf_counter()
                client = self._client if not retries else self._client.with_options(
                    max_retries=self.config.max_retries - retries)
                try:
                    raw = await client.chat.completions.with_raw_response.create(**kwargs)
                    retries += raw.retries_taken
                    resp = raw.parse()
                    text = restore_stop(resp.choices[0].message.content or "", params.stop)
                    usage = resp.usage
                    self.stats["calls"] += 1
                    self.stats["retries"] += retries
                    return Completion(text=text, prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                                      completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                                      latency_s=time.perf_counter() - t0, retries=retries)
                except (openai.APIStatusError, openai.APITimeoutError, openai.APIConnectionError) as e:
                    last_error = f"{type(e).__name__}: {str(e)[:200]}"
                    if _retried_by_sdk(e):  # the SDK spent the rest of the budget on this one
                        retries = self.config.max_retries
                    break
                except (openai.APIResponseValidationError, ValueError, KeyError, IndexError, TypeError,
                        AttributeError) as e:  # a 200 that is not a chat completion: the SDK does not retry it
                    last_error = f"malformed response: {type(e).__name__}: {str(e)[:200]}"
                    if retries >= self.config.max_retries:
                        break
                    retries += 1
        self.stats["retries"] += retries
        self.stats["failures"] += 1
        log.warning("LLM call failed after %d retries: %s", retries, last_error)
        return Completion(text="", error=last_error, retries=retries)

    async def aclose(self) -> None:
        """Close this event loop's HTTP pool (an injected client stays open); the next call binds a fresh one."""
        if self._client is not None and self._client is not self._injected:
            await self._client.close()
        self._client = self._sem = self._loop = None
