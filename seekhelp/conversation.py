"""How an episode is laid out as chat messages, for each side. Runtime, SFT export and teachers share this.

SLM side: system = SLM role prompt; user = the question, exactly as the user wrote it (the privacy items are
labels for the judge, the detector, the reward and the guard: no model ever sees that list); then assistant = one
SLM turn, user = the LLM's reply wrapped in <agent-reply>, and so on. LLM side: system = LLM role prompt (plus
grounding notes, added by the endpoint: seekhelp.backends.grounded); then user = one SLM message, assistant = the
LLM's raw reply, and so on. The LLM side never contains the question: only what the SLM chose to send.
"""

from seekhelp.protocol import INFORMATION, render_agent_reply
from seekhelp.records import Question, Turn


def agent_reply_for(turn: Turn) -> str:
    """What the SLM is shown after an LLM (or guard) turn."""
    return render_agent_reply(turn.action if turn.action in ("need", INFORMATION) else INFORMATION, turn.content)


def slm_messages(system: str, question: Question, turns: list[Turn]) -> list[dict]:
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": question.question}]
    for t in turns:
        if t.role == "slm":
            msgs.append({"role": "assistant", "content": t.raw})
        elif t.role in ("llm", "guard"):
            msgs.append({"role": "user", "content": agent_reply_for(t)})
    return msgs


def llm_messages(system: str, turns: list[Turn], pending: str) -> list[dict]:
    """The LLM's view: its system prompt, earlier (sent, reply) pairs, and the new message `pending`."""
    msgs = [{"role": "system", "content": system}]
    for t in turns:
        if t.role == "llm" and t.sent is not None:
            msgs.append({"role": "user", "content": t.sent})
            msgs.append({"role": "assistant", "content": t.raw})
    msgs.append({"role": "user", "content": pending})
    return msgs
