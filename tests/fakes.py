"""Test doubles that follow the real interfaces (no network, no model)."""

from collections.abc import Callable

from seekhelp.backends.base import Completion, GenParams


class ScriptedSLM:
    """A ChatBackend whose replies come from a function of the conversation; records every batch it got."""

    def __init__(self, reply: Callable[[list[dict]], str], name: str = "scripted-slm"):
        self.reply, self.name = reply, name
        self.batches: list[int] = []

    async def generate(self, conversations, params: GenParams) -> list[Completion]:
        self.batches.append(len(conversations))
        out = []
        for conv in conversations:
            text = self.reply(conv)
            out.append(Completion(text=text, prompt_tokens=sum(len(m["content"].split()) for m in conv),
                                  completion_tokens=len(text.split())))
        return out
