"""One chat interface for every backend: a batch of conversations in, one completion per conversation out."""

import asyncio
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass
class GenParams:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] | None = None  # generation ends after the first of these strings (kept in the text)
    seed: int | None = None
    json_schema: dict | None = None  # structured output where the endpoint supports it (always validate)


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None  # set when the call failed for good (after retries); text is then ""
    retries: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class ChatBackend(Protocol):
    name: str  # model name as recorded in trajectories

    async def generate(self, conversations: list[list[Message]], params: GenParams) -> list[Completion]:
        """Complete every conversation; never raises for a single failed call (see Completion.error)."""
        ...


def generate_sync(backend: ChatBackend, conversations: list[list[Message]], params: GenParams) -> list[Completion]:
    """Run `backend.generate` from synchronous code (not from inside a running event loop)."""
    return asyncio.run(backend.generate(conversations, params))


def truncate_at_stop(text: str, stop: list[str] | None) -> str:
    """Cut `text` right after the earliest stop string (the stop string is kept)."""
    if not stop:
        return text
    best = -1
    for s in stop:
        i = text.find(s)
        if i >= 0 and (best < 0 or i + len(s) < best):
            best = i + len(s)
    return text if best < 0 else text[:best]
