"""The grounded expert: any LLM backend, with retrieved facts for exactly the text each call sends.

Offline, the LLM role is a small model that knows few facts, so it is given retrieved knowledge-base facts in its
system prompt (never the user's question or private facts, only what the call itself carries). Grounding is a
property of the ENDPOINT, not of a strategy: every strategy that talks to a grounded endpoint goes through this one
wrapper, so `llm_direct` (the raw question), `plan_execute` (the plan request), `cascade` (the delegated question)
and `dynamic` (each message) all get facts retrieved for the very text they send, the same way.

Asking back: when the grounder can tell that a request names no place it could look up (`grounder.missing`, as
`seekhelp.knowledge.grounder` provides), the endpoint replies `<need>` with what is missing instead of calling the
model. That is the retrieval step of the expert deciding, by rule, that it has nothing to answer from; the 135M model
ignored a written instruction to do the same (0 `<need>` replies in a 64-question demo eval). Every strategy meets
the same rule, since it belongs to the endpoint.
"""

from collections.abc import Callable

from seekhelp.backends.base import ChatBackend, Completion, GenParams, Message
from seekhelp.protocol import NEED, render_llm_turn

GROUNDING_HEADER = "Reference notes you may rely on:"


def grounding_block(facts: list[str]) -> str:
    if not facts:
        return ""
    return f"\n\n{GROUNDING_HEADER}\n" + "\n".join(f"- {f}" for f in facts)


def _last_user(conv: list[Message]) -> str:
    return next((str(m.get("content") or "") for m in reversed(conv) if m.get("role") == "user"), "")


def ground_conversation(conv: list[Message], grounder: Callable[[str], list[str]]) -> list[Message]:
    """The conversation with facts for its last user message appended to the system prompt (added if absent)."""
    text = _last_user(conv)
    block = grounding_block(grounder(text) if text.strip() else [])
    if not block:
        return list(conv)
    if conv and conv[0].get("role") == "system":
        return [{**conv[0], "content": str(conv[0].get("content") or "") + block}, *conv[1:]]
    return [{"role": "system", "content": block.strip()}, *conv]


def without_asked_back(conv: list[Message]) -> list[Message]:
    """The conversation minus every earlier exchange the expert answered with <need>: the follow-up replaces that
    request. Shown its own earlier <need>, the 135M expert copied it word for word in reply to the follow-up that
    named the place (5 of the 9 failed follow-ups of a demo eval)."""
    from seekhelp.protocol import parse_llm_turn

    out: list[Message] = []
    for m in conv:
        if m.get("role") == "assistant" and parse_llm_turn(str(m.get("content") or "")).action == NEED:
            if out and out[-1].get("role") == "user":
                out.pop()
            continue
        out.append(m)
    return out


class GroundedBackend:
    """Wraps a ChatBackend; every conversation is grounded on its own last user message before it is sent, without
    the exchanges it asked back on."""

    def __init__(self, inner: ChatBackend, grounder: Callable[[str], list[str]]):
        self.inner, self.grounder = inner, grounder
        self.name = inner.name

    async def generate(self, conversations: list[list[Message]], params: GenParams) -> list[Completion]:
        out: list[Completion | None] = [self._ask_back(c) for c in conversations]
        todo = [i for i, c in enumerate(out) if c is None]
        prompts = [ground_conversation(without_asked_back(conversations[i]), self.grounder) for i in todo]
        done = await self.inner.generate(prompts, params) if todo else []
        for i, c in zip(todo, done, strict=True):
            out[i] = c
        return out  # type: ignore[return-value]

    def _ask_back(self, conv: list[Message]) -> Completion | None:
        """The <need> reply for a request that names no place the grounder knows, else None (the model answers)."""
        missing = getattr(self.grounder, "missing", None)
        noun = missing(_last_user(conv)) if missing else None
        if not noun:
            return None
        from seekhelp.knowledge import need_text

        text = render_llm_turn(f"The request names no {noun} I could look up.", NEED, need_text(noun))
        return Completion(text=text, extra={"asked_back_by": "grounder"})

    async def aclose(self) -> None:
        if hasattr(self.inner, "aclose"):
            await self.inner.aclose()


def grounded(llm: ChatBackend, grounder: Callable[[str], list[str]] | None) -> ChatBackend:
    """`llm` grounded by `grounder` (None: `llm` as it is; an already grounded backend is not wrapped twice)."""
    if grounder is None or isinstance(llm, GroundedBackend):
        return llm
    return GroundedBackend(llm, grounder)
