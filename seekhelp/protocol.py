"""The tag protocol spoken between the small model (SLM) and the large model (LLM).

SLM turn: ``<think>…</think>`` then exactly one ``<message>…</message>`` (ask the LLM) or
``<answer>…</answer>`` (finish). LLM turn: free reasoning (plain, or inside ``<think>…</think>``) then exactly
one ``<need>…</need>`` or ``<information>…</information>``. The LLM's reply reaches the SLM wrapped as
``<agent-reply><information>…</information></agent-reply>``. Tags are exact and lowercase.

The parsers never raise. Each deviation from the format becomes a short string in ``errors`` and the parser
still recovers what it can (an unclosed action keeps the rest of the text as content, the first of several
actions wins, a missing ``<think>`` does not hide the action).

Tag neutralization: a protocol tag inside free text (a question quoting ``<answer>``, say) would break the
framing, so ``sanitize`` replaces the ``<`` of every exact protocol tag by ``‹`` (U+2039). Nothing is deleted,
the text stays readable, and the result holds no protocol tag. Every ``render_*`` function sanitizes and strips
its inputs, so ``parse_*(render_*(...))`` gives back exactly those fields with no errors (non-empty content).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field

THINK = "think"
MESSAGE = "message"
ANSWER = "answer"
AGENT_REPLY = "agent-reply"
NEED = "need"
INFORMATION = "information"
TAGS = (THINK, MESSAGE, ANSWER, AGENT_REPLY, NEED, INFORMATION)
SLM_ACTIONS = (MESSAGE, ANSWER)
LLM_ACTIONS = (NEED, INFORMATION)
SLM_STOP = ["</message>", "</answer>"]
LLM_STOP = ["</need>", "</information>"]
NEUTRAL_LT = "\u2039"  # what sanitize puts in place of the "<" of a protocol tag

_TAG_RE = re.compile(r"<(/?)(" + "|".join(re.escape(t) for t in TAGS) + r")>")
_THINK_TAG_RE = re.compile(r"</?think>")
_THINK_BLOCK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)

Match = re.Match[str]


@dataclass
class SLMTurn:
    """One parsed SLM turn; ``action`` is "message", "answer", or None when neither could be found."""

    raw: str
    think: str = ""
    action: str | None = None
    content: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def recoverable(self) -> bool:
        """True when an action was found, even if the turn had format errors."""
        return self.action is not None


@dataclass
class LLMTurn:
    """One parsed LLM turn; ``action`` is "need", "information", or None (callers then treat it as information)."""

    raw: str
    reasoning: str = ""
    action: str | None = None
    content: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def sanitize(text: str) -> str:
    """Neutralize every protocol tag in free text by swapping its ``<`` for ``‹`` (idempotent)."""
    return _TAG_RE.sub(lambda m: NEUTRAL_LT + m.group(0)[1:], text)


def _index(tags: list[Match], start: int, pred: Callable[[Match], bool]) -> int | None:
    return next((k for k in range(start, len(tags)) if pred(tags[k])), None)


def _is(literal: str) -> Callable[[Match], bool]:
    return lambda m: m.group(0) == literal


def _opens(names: tuple[str, ...]) -> Callable[[Match], bool]:
    return lambda m: not m.group(1) and m.group(2) in names


def _misplaced(m: Match, inside: str | None, slm: bool) -> str:
    """The error for a protocol tag found where none belongs: inside a block, or around the action."""
    if slm and m.group(2) == AGENT_REPLY:
        return "slm wrote <agent-reply>"
    return f"nested tag {m.group(0)} inside <{inside}>" if inside else f"stray tag {m.group(0)}"


def _read_action(text: str, tags: list[Match], a: int, slm: bool, errors: list[str]) -> tuple[str, str]:
    """Read the action block opened by ``tags[a]`` and what follows it; returns (name, content)."""
    name = tags[a].group(2)
    close = _index(tags, a + 1, _is(f"</{name}>"))
    inner = tags[a + 1 : close] if close is not None else tags[a + 1 :]
    errors += [_misplaced(m, name, slm) for m in inner]
    content = text[tags[a].end() : tags[close].start() if close is not None else len(text)].strip()
    if close is None:
        errors.append(f"unclosed <{name}>")
    if not content:
        errors.append(f"empty <{name}>")
    if close is not None:
        after, actions, extra = tags[close + 1 :], SLM_ACTIONS if slm else LLM_ACTIONS, False
        for m in after:  # a later action block is one error, not one per tag
            if m.group(2) in actions and (extra or not m.group(1)):
                errors.append("more than one action")
                extra = True
            else:
                errors.append(_misplaced(m, None, slm))
        if not after and text[tags[close].end() :].strip():
            errors.append(f"text after </{name}>")
    return name, content


def _as_text(text: object) -> str:
    return text if isinstance(text, str) else "" if text is None else str(text)


def parse_slm_turn(text: str) -> SLMTurn:
    """Parse one SLM turn: ``<think>…</think>`` then one ``<message>`` or ``<answer>``; never raises.

    A turn whose ``<think>`` was prefilled by the chat template (text starts with the reasoning and a lone
    ``</think>``) gets the error "missing <think>" but its reasoning is still read as ``think``.
    """
    text = _as_text(text)
    tags = list(_TAG_RE.finditer(text))
    errors: list[str] = []
    is_action = _opens(SLM_ACTIONS)
    think, i, pos = "", 0, 0  # i: first unread tag, pos: first unread character
    opened = bool(tags) and tags[0].group(0) == "<think>"
    close = _index(tags, 0, _is("</think>"))
    first_act = _index(tags, 0, is_action)
    if not opened:
        errors.append("missing <think>")
        if close is not None and first_act is not None and first_act < close:
            close = None  # that </think> comes after the action: it is not the end of a prefilled think
    elif text[: tags[0].start()].strip():
        errors.append("text before <think>")
    if opened and close is None:
        errors.append("unclosed <think>")
    if opened or close is not None:
        start, first = (tags[0].end(), 1) if opened else (0, 0)
        stop = close if close is not None else first_act if first_act is not None else len(tags)
        end = tags[stop].start() if stop < len(tags) else len(text)
        think = text[start:end].strip()
        errors += [_misplaced(m, THINK, True) for m in tags[first:stop]]
        i, pos = (stop + 1, tags[stop].end()) if close is not None else (stop, end)
    act = _index(tags, i, is_action)
    errors += [_misplaced(m, None, True) for m in tags[i:act]]
    if act is None:
        errors.append("no action")
        return SLMTurn(text, think, None, "", list(dict.fromkeys(errors)))
    if _TAG_RE.sub("", text[pos : tags[act].start()]).strip():
        errors.append(f"text before <{tags[act].group(2)}>")
    name, content = _read_action(text, tags, act, True, errors)
    return SLMTurn(text, think, name, content, list(dict.fromkeys(errors)))


def _split_think(text: str) -> tuple[str, str]:
    """Split text with no action tag into (thinking, the rest); a lone ``</think>`` ends a prefilled think."""
    thinking = [m.group(1).strip() for m in _THINK_BLOCK_RE.finditer(text)]
    rest = _THINK_BLOCK_RE.sub("", text)
    if "</think>" in rest:
        head, rest = rest.rsplit("</think>", 1)
        thinking.insert(0, _THINK_TAG_RE.sub("", head).strip())
    return "\n".join(t for t in thinking if t), _THINK_TAG_RE.sub("", rest).strip()


def parse_llm_turn(text: str) -> LLMTurn:
    """Parse one LLM turn: reasoning, then one ``<need>`` or ``<information>``; never raises."""
    text = _as_text(text)
    tags = list(_TAG_RE.finditer(text))
    act = _index(tags, 0, _opens(LLM_ACTIONS))
    if act is None:
        reasoning, content = _split_think(text)
        return LLMTurn(text, reasoning, None, content, ["no <need> or <information>"])
    reasoning = _THINK_TAG_RE.sub("", text[: tags[act].start()]).strip()
    errors = [_misplaced(m, None, False) for m in tags[:act] if m.group(2) != THINK]
    name, content = _read_action(text, tags, act, False, errors)
    return LLMTurn(text, reasoning, name, content, list(dict.fromkeys(errors)))


def _check(action: str, allowed: tuple[str, ...]) -> None:
    if action not in allowed:
        raise ValueError(f"action must be one of {allowed}, got {action!r}")


def render_slm_turn(think: str, action: str, content: str) -> str:
    """Write an SLM turn, e.g. ``<think>…</think>\\n<message>…</message>`` (contents sanitized and stripped)."""
    _check(action, SLM_ACTIONS)
    return f"<think>{sanitize(think).strip()}</think>\n<{action}>{sanitize(content).strip()}</{action}>"


def render_llm_turn(reasoning: str, action: str, content: str) -> str:
    """Write an LLM turn: the reasoning as plain text, a blank line, then the action block."""
    _check(action, LLM_ACTIONS)
    reasoning = sanitize(reasoning).strip()
    head = f"{reasoning}\n\n" if reasoning else ""
    return f"{head}<{action}>{sanitize(content).strip()}</{action}>"


def render_agent_reply(action: str, content: str) -> str:
    """Wrap the LLM's action for the SLM: ``<agent-reply><information>…</information></agent-reply>``."""
    _check(action, LLM_ACTIONS)
    return f"<{AGENT_REPLY}><{action}>{sanitize(content).strip()}</{action}></{AGENT_REPLY}>"


def validate_dialogue(slm_turn_texts: list[str]) -> list[str]:
    """Errors of a whole SLM side: every turn well-formed, all messages but the last turn, an answer.

    Each error is prefixed with its 1-based turn number; an empty list means the dialogue is well-formed.
    """
    if not slm_turn_texts:
        return ["empty dialogue"]
    errors: list[str] = []
    last = len(slm_turn_texts) - 1
    for k, text in enumerate(slm_turn_texts):
        turn = parse_slm_turn(text)
        errors += [f"turn {k + 1}: {e}" for e in turn.errors]
        want = ANSWER if k == last else MESSAGE
        if turn.action is not None and turn.action != want:
            errors.append(f"turn {k + 1}: expected <{want}>, got <{turn.action}>")
    return errors


def extract_answer(text: str) -> str | None:
    """The stripped content of the last closed ``<answer>…</answer>`` in text, or None."""
    text = _as_text(text)
    end = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, end) if end >= 0 else -1
    return text[start + len("<answer>") : end].strip() if start >= 0 else None


def normalize_message(text: str) -> str:
    """A message up to case, spacing and punctuation: two requests that normalize alike are the same request."""
    return " ".join(re.findall(r"[^\W_]+", (text or "").lower()))
