"""Test doubles that follow the real interfaces (no network, no model)."""

import json
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


# One reply for every LLM step of the data stage's injection and judge: each step reads the keys it needs.
INJECT_AND_JUDGE_REPLY = json.dumps({
    "privacy_items": ["The user's cousin Mira lives in the city in question."],
    "restated": "The user's cousin Mira lives in that city.", "question": "Which city does Mira live in?",
    "reason": "Same answer, not written in the question.", "same_answer": True, "answer_in_question": False,
    "leaked_items": [], "leak": False})
