"""How an episode is laid out as chat messages, for each side. Runtime, SFT export and teachers share this.

SLM side: system = SLM role prompt; user = the question plus its private facts; then assistant = one SLM turn,
user = the LLM's reply wrapped in <agent-reply>, and so on. LLM side: system = LLM role prompt (plus grounding
notes, if any); then user = one SLM message, assistant = the LLM's raw reply, and so on. The LLM side never
contains the question or the private facts: only what the SLM chose to send.
"""

from seekhelp.protocol import INFORMATION, render_agent_reply
from seekhelp.records import Question, Turn

PRIVATE_HEADER = "Private facts:"


def slm_user_content(question: str, privacy_items: list[str]) -> str:
    if not privacy_items:
        return question
    facts = "\n".join(f"- {p}" for p in privacy_items)
    return f"{question}\n\n{PRIVATE_HEADER}\n{facts}"


def agent_reply_for(turn: Turn) -> str:
    """What the SLM is shown after an LLM (or guard) turn."""
    return render_agent_reply(turn.action if turn.action in ("need", INFORMATION) else INFORMATION, turn.content)


def slm_messages(system: str, question: Question, turns: list[Turn]) -> list[dict]:
    msgs = [{"role": "system", "content": system},
            {"role": "user", "content": slm_user_content(question.question, question.privacy_items)}]
    for t in turns:
        if t.role == "slm":
            msgs.append({"role": "assistant", "content": t.raw})
        elif t.role in ("llm", "guard"):
            msgs.append({"role": "user", "content": agent_reply_for(t)})
    return msgs


def grounding_block(facts: list[str]) -> str:
    if not facts:
        return ""
    return "\n\nReference notes you may rely on:\n" + "\n".join(f"- {f}" for f in facts)


def llm_messages(system: str, turns: list[Turn], pending: str, facts: list[str] | None = None) -> list[dict]:
    """The LLM's view: its system prompt, earlier (sent, reply) pairs, and the new message `pending`."""
    msgs = [{"role": "system", "content": system + grounding_block(facts or [])}]
    for t in turns:
        if t.role == "llm" and t.sent is not None:
            msgs.append({"role": "user", "content": t.sent})
            msgs.append({"role": "assistant", "content": t.raw})
    msgs.append({"role": "user", "content": pending})
    return msgs
