"""The OpenAI chat-completions wire format, in and out: parse a request body, build a completion or its SSE chunks.

In: the app's LAST user message is the question (earlier messages and system prompts stay on the machine and are
not used); `model` names the strategy (`seekhelp/dynamic` or bare `dynamic`); the optional extension field
`"seekhelp": {"privacy_items": [...]}` labels the user's private facts for the SLM and the outgoing guard.
Sampling fields (temperature, max_tokens, ...) are accepted and ignored: the server's runtime config decides, so
that every request of a batch shares one generation call.
Out: a standard `chat.completion` (or `chat.completion.chunk` events ending in `data: [DONE]`), plus the audit
trail under `"seekhelp"` (in the last chunk when streaming).
"""

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

from seekhelp.records import Question
from seekhelp.serve.errors import bad_request, not_found
from seekhelp.strategies import STRATEGIES

PREFIX = "seekhelp/"
DEFAULT_MODEL = PREFIX + "dynamic"


@dataclass
class ChatRequest:
    model: str  # as the app named it (echoed back)
    strategy: str
    question: Question
    stream: bool


def model_ids() -> list[str]:
    return [PREFIX + s for s in STRATEGIES]


def strategy_of(model: str) -> str:
    name = model[len(PREFIX):] if model.startswith(PREFIX) else model
    if name not in STRATEGIES:
        raise not_found(f"model {model!r} does not exist; choose one of {', '.join(model_ids())}", "model_not_found")
    return name


def _text(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts) and parts:
            return "\n".join(parts)
    raise bad_request(f"{where}.content: expected a string or a list of text parts")


def parse_chat_request(body) -> ChatRequest:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages': expected a non-empty list of messages", "invalid_messages")
    question = None
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise bad_request(f"messages[{i}]: expected an object with a 'role'", "invalid_messages")
        if m["role"] == "user":
            question = _text(m.get("content"), f"messages[{i}]")
            break
    if question is None or not question.strip():
        raise bad_request("'messages' holds no user message with text (the last one is the question)",
                          "invalid_messages")
    model = body.get("model", DEFAULT_MODEL)
    if not isinstance(model, str):
        raise bad_request("'model': expected a string", "invalid_model")
    strategy = strategy_of(model)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream': expected true or false")
    if body.get("n", 1) != 1:
        raise bad_request("'n': only 1 completion per request is supported")
    ext = body.get("seekhelp") or {}
    if not isinstance(ext, dict):
        raise bad_request("'seekhelp': expected an object such as {\"privacy_items\": [...]}")
    items = ext.get("privacy_items", [])
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise bad_request("'seekhelp.privacy_items': expected a list of strings", "invalid_privacy_items")
    q = Question(question=question.strip(), answers=[], privacy_items=[x for x in items if x.strip()], source="serve")
    return ChatRequest(model=model, strategy=strategy, question=q, stream=stream)


def completion(req: ChatRequest, answer: str, finish: str, usage: dict, audit: dict) -> dict:
    return {"id": f"chatcmpl-{audit['trajectory_id']}", "object": "chat.completion", "created": int(time.time()),
            "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": finish,
                         "logprobs": None}],
            "usage": usage, "seekhelp": audit}


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def sse_chunks(req: ChatRequest, answer: str, finish: str, usage: dict, audit: dict) -> Iterator[str]:
    """The final answer as chunk events (a word at a time), the audit trail and usage in the last one, then [DONE].

    The episode has already run when the first chunk goes out: only the answer, never the SLM's protocol text,
    is streamed, and a failed upstream is still a plain 502 rather than a broken stream."""
    head = {"id": f"chatcmpl-{audit['trajectory_id']}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": req.model}

    def chunk(delta: dict, finish_reason=None, **extra) -> str:
        return _sse({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                                          "logprobs": None}], **extra})

    yield chunk({"role": "assistant", "content": ""})
    for piece in re.findall(r"\S+\s*|\s+", answer):
        yield chunk({"content": piece})
    yield chunk({}, finish, usage=usage, seekhelp=audit)
    yield "data: [DONE]\n\n"
