"""The HTTP side of `seekhelp serve`: routes, bearer auth, body limits, and OpenAI-style errors.

Routes: POST /v1/chat/completions, GET /v1/models, GET /health. Starlette rather than FastAPI because every
reply, errors included, must follow OpenAI's shapes exactly (FastAPI's own validation answers 422 in its own
format); both come with `transformers[serving]`. Each request is handed to the BatchEngine, so the route only
checks, waits and formats. Any failure becomes one `{"error": ...}` reply and one log line; the server keeps
serving.
"""

import asyncio
import contextlib
import functools
import hmac
import inspect
import json
import logging
import time
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from seekhelp.serve.audit import audit_trail, finish_reason, usage
from seekhelp.serve.chat import completion, model_ids, parse_chat_request, sse_chunks
from seekhelp.serve.engine import BatchEngine
from seekhelp.serve.errors import APIError, bad_request
from seekhelp.strategies import StrategyContext

log = logging.getLogger("seekhelp.serve")


@dataclass
class ServeSettings:
    max_batch: int = 32
    batch_window_ms: float = 20.0
    max_inflight_batches: int = 1
    max_body_bytes: int = 1 << 20
    request_timeout_s: float = 900.0  # no request waits longer than this, whatever the upstream does
    api_key: str | None = None  # when set, /v1/* needs `Authorization: Bearer <api_key>`
    prices: dict = field(default_factory=dict)  # model name -> {"prompt": $, "completion": $} per 1M tokens


async def read_json(request: Request, max_bytes: int):
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise APIError(413, f"request body of {declared} bytes is over the limit of {max_bytes}", code="too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise APIError(413, f"request body is over the limit of {max_bytes} bytes", code="too_large")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"the request body is not valid JSON ({e})", "invalid_json") from e


def create_app(ctx: StrategyContext, settings: ServeSettings | None = None, on_batch=None,
               on_shutdown=None) -> Starlette:
    """The ASGI app over one StrategyContext (one loaded SLM, one upstream backend) for the server's life."""
    settings = settings or ServeSettings()
    engine = BatchEngine(ctx, max_batch=settings.max_batch, window_s=settings.batch_window_ms / 1000,
                         max_inflight=settings.max_inflight_batches, on_batch=on_batch)
    guard_mode = ctx.config.guard

    def route(needs_auth: bool = True):
        """Auth, then the handler; an APIError or anything unexpected becomes one JSON error and one log line."""

        def wrap(handler):
            @functools.wraps(handler)
            async def endpoint(request: Request):
                t0 = time.perf_counter()
                try:
                    if needs_auth and settings.api_key is not None:
                        given = request.headers.get("authorization", "")
                        token = given[7:].strip() if given.lower().startswith("bearer ") else ""
                        if not hmac.compare_digest(token.encode(), settings.api_key.encode()):
                            raise APIError(401, "missing or invalid bearer token (Authorization: Bearer ...)",
                                           code="invalid_api_key")
                    return await handler(request)
                except APIError as e:
                    log.warning("%s %s -> %d %s: %s (%.2f s)", request.method, request.url.path, e.status,
                                e.code or e.type, e.message, time.perf_counter() - t0)
                    return e.response()
                except Exception as e:  # a bug or a backend crash: answer, log one line, keep serving
                    log.error("%s %s -> 500 %s: %s", request.method, request.url.path, type(e).__name__, e)
                    return APIError(500, f"internal error: {type(e).__name__}: {e}", "server_error",
                                    "internal_error").response()

            return endpoint

        return wrap

    @route(needs_auth=False)
    async def health(request: Request):
        return JSONResponse({"status": "ok", "pending": engine.pending, "inflight_batches": engine.inflight,
                             **engine.stats})

    @route()
    async def models(request: Request):
        now = int(time.time())
        return JSONResponse({"object": "list", "data": [{"id": m, "object": "model", "created": now,
                                                         "owned_by": "seekhelp"} for m in model_ids()]})

    @route()
    async def chat_completions(request: Request):
        req = parse_chat_request(await read_json(request, settings.max_body_bytes))
        t0 = time.perf_counter()
        try:
            served = await asyncio.wait_for(engine.submit(req.strategy, req.question), settings.request_timeout_s)
        except TimeoutError as e:
            raise APIError(504, f"no answer within {settings.request_timeout_s:.0f} s", "server_error",
                           "timeout") from e
        t = served.trajectory
        audit = audit_trail(served, guard_mode, settings.prices)
        if t.stop_reason == "error":
            if (t.error or "").startswith("slm:"):
                raise APIError(500, f"the local SLM failed: {t.error}", "server_error", "slm_failed",
                               {"seekhelp": audit})
            raise APIError(502, f"the upstream LLM failed after its retries: {t.error}", "upstream_error",
                           "upstream_failed", {"seekhelp": audit})
        answer, finish, use = t.final_answer or "", finish_reason(t), usage(t)
        log.info("POST /v1/chat/completions -> 200 %s stop=%s upstream_calls=%d guard=%d batch=%d (%.2f s)",
                 req.strategy, t.stop_reason, len(audit["upstream"]), len(audit["guard"]["actions"]),
                 served.batch_size, time.perf_counter() - t0)
        if req.stream:
            return StreamingResponse(sse_chunks(req, answer, finish, use, audit), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return JSONResponse(completion(req, answer, finish, use, audit))

    async def http_error(request: Request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        log.warning("%s %s -> %d", request.method, request.url.path, exc.status_code)
        return APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                        code=code).response()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()
            for backend in (ctx.slm, ctx.llm):
                if hasattr(backend, "aclose"):
                    await backend.aclose()
            if on_shutdown is not None and inspect.isawaitable(done := on_shutdown()):
                await done

    app = Starlette(routes=[Route("/health", health), Route("/v1/models", models),
                            Route("/v1/chat/completions", chat_completions, methods=["POST"])],
                    exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.engine = engine
    return app
