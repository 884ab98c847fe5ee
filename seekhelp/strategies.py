"""Every way of answering a private question, behind one interface: `await run_strategy(name, ...)`.

- dynamic: the SLM decides when and what to ask (the policy we train); runs the shared episode loop.
- slm_cot: the SLM alone, reasoning then answering. Never leaks, never costs LLM tokens.
- llm_direct / llm_cot: the private question itself goes to the LLM (a leak by construction).
- static_rewrite (PAPILLON-style): the SLM rewrites the question without private facts, one LLM call, the SLM
  composes the answer.
- tool_llm (Router-R1-style): the episode loop, but the LLM is a plain tool that may not ask for context (enforced
  when its reply is produced, so the SLM is shown exactly what the trajectory records).
- cascade (COREA-style): the SLM answers with a verbalised confidence; below a threshold the question is
  delegated to the LLM (a leak by construction).
- plan_execute (COPE-style): the LLM plans from the question (a leak), the SLM executes the plan.
- redact_direct: what users reach for instead of a learned policy: the question with its private spans masked goes
  to the LLM, whose answer is final. `redactor` "pii" is a deployable label-free anonymizer (seekhelp.pii: e-mail,
  phone, card and street-address patterns, person names with Presidio when installed); "labels" is an oracle that
  masks exactly what the question's privacy labels say (the guard's redact mode), the strongest redaction there is.
  Its attempted message is the redacted text, so its leak is what the redactor let through.

Same footing for all: every SLM prompt carries the question text alone (privacy items are labels, never prompt
text); strategies that forward the raw question forward that text; and every call to a grounded endpoint is
grounded on exactly the text that call sends (``run_strategy`` wraps the LLM once, for every strategy).
"""

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from seekhelp import protocol
from seekhelp.backends.base import ChatBackend, Completion, GenParams
from seekhelp.backends.grounded import grounded
from seekhelp.prompts import load_prompt
from seekhelp.records import Question, Trajectory, Turn, content_hash
from seekhelp.runtime import Grounder, Runtime, RuntimeConfig

STRATEGIES = ("dynamic", "slm_cot", "llm_direct", "llm_cot", "static_rewrite", "tool_llm", "cascade", "plan_execute",
              "redact_direct")
REDACTORS = ("pii", "labels")
_CONFIDENCE_RE = re.compile(r"<confidence>\s*(\d+(?:\.\d+)?)")
_MESSAGE_RE = re.compile(r"<message>(.*?)(?:</message>|$)", re.DOTALL)


@dataclass
class StrategyContext:
    slm: ChatBackend
    llm: ChatBackend
    config: RuntimeConfig
    grounder: Grounder | None = None
    cascade_threshold: float = 70.0
    redactor: str = "pii"  # redact_direct: pii (label-free) | labels (oracle)
    sample_index: int = 0
    round: int = 0


def _traj(ctx: StrategyContext, q: Question, name: str, raw_sent: bool = False) -> Trajectory:
    config = content_hash(ctx.config.fingerprint(), ctx.cascade_threshold if name == "cascade" else None,
                          *([ctx.redactor] if name == "redact_direct" else []))
    return Trajectory(question_id=q.id, strategy=name, slm=ctx.slm.name, llm=ctx.llm.name,
                      sample_index=ctx.sample_index, config_hash=config, round=ctx.round,
                      raw_question_sent=raw_sent)


def _turn(role: str, c: Completion, action: str | None, content: str, sent: str | None = None,
          errors: list[str] | None = None, think: str = "") -> Turn:
    return Turn(role=role, raw=c.text, action=action, content=content, think=think, errors=list(errors or []),
                prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens, latency_s=c.latency_s, sent=sent)


def _params(ctx: StrategyContext, role: str, stop: list[str] | None) -> GenParams:
    c = ctx.config
    if role == "slm":
        return GenParams(c.slm_max_new_tokens, c.slm_temperature, c.top_p, stop, c.seed)
    return GenParams(c.llm_max_new_tokens, c.llm_temperature, c.top_p, stop, c.seed)


def _conv(system: str, user: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _answer_of(text: str) -> str | None:
    """The final answer of a baseline's output: the <answer> block, else (for plain replies) the last line."""
    found = protocol.extract_answer(text)
    if found is not None:
        return found
    parsed = protocol.parse_slm_turn(text)
    if parsed.action == protocol.ANSWER and parsed.content:
        return parsed.content
    return None


def _close(t: Trajectory, answer: str | None, c: Completion | None = None) -> Trajectory:
    if c is not None and c.error:
        t.stop_reason, t.error, t.format_ok = "error", c.error, False
        return t
    t.final_answer = answer
    t.stop_reason = "answer" if answer else "format_error"
    t.format_ok = answer is not None
    return t


async def _dynamic(ctx: StrategyContext, qs: list[Question], name: str = "dynamic") -> list[Trajectory]:
    return await Runtime(ctx.slm, ctx.llm, ctx.config).arun(qs, name, ctx.sample_index, ctx.round)


async def _tool_llm(ctx: StrategyContext, qs: list[Question]) -> list[Trajectory]:
    cfg = replace(ctx.config, llm_prompt="llm_tool", llm_can_ask=False)
    return await Runtime(ctx.slm, ctx.llm, cfg).arun(qs, "tool_llm", ctx.sample_index, ctx.round)


async def _slm_cot(ctx: StrategyContext, qs: list[Question]) -> list[Trajectory]:
    system = load_prompt("slm_alone")
    outs = await ctx.slm.generate([_conv(system, q.question) for q in qs],
                                  _params(ctx, "slm", ["</answer>"]))
    trajs = []
    for q, c in zip(qs, outs, strict=True):
        t, p = _traj(ctx, q, "slm_cot"), protocol.parse_slm_turn(c.text)
        t.turns.append(_turn("slm", c, p.action, p.content, errors=p.errors, think=p.think))
        trajs.append(_close(t, _answer_of(c.text), c))
    return trajs


async def _llm_alone(ctx: StrategyContext, qs: list[Question], name: str) -> list[Trajectory]:
    system = load_prompt("llm_direct" if name == "llm_direct" else "llm_cot")
    sent = [q.question for q in qs]  # the raw question: a leak by construction
    outs = await ctx.llm.generate([_conv(system, s) for s in sent], _params(ctx, "llm", ["</answer>"]))
    trajs = []
    for q, s, c in zip(qs, sent, outs, strict=True):
        t = _traj(ctx, q, name, raw_sent=True)
        ans = _answer_of(c.text) or (c.text.strip().splitlines() or [None])[-1]
        t.turns.append(_turn("llm", c, protocol.ANSWER, ans or "", sent=s))
        trajs.append(_close(t, ans, c))
    return trajs


def redact_question(q: Question, redactor: str) -> str:
    """The question with its private spans masked, by a label-free anonymizer ("pii") or by the labels ("labels")."""
    from seekhelp.privacy import REDACTED, OutgoingGuard, redact_spans

    if redactor == "labels":
        return OutgoingGuard("redact").check(q.question, q.privacy_items, q.meta.get("private_terms")).text
    if redactor == "pii":
        from seekhelp.pii import find_pii

        return redact_spans(q.question, [h.span for h in find_pii(q.question)], REDACTED)
    raise ValueError(f"redactor {redactor!r}: choose one of {', '.join(REDACTORS)}")


async def _redact_direct(ctx: StrategyContext, qs: list[Question]) -> list[Trajectory]:
    sent = [redact_question(q, ctx.redactor) for q in qs]
    outs = await ctx.llm.generate([_conv(load_prompt("llm_direct"), s) for s in sent],
                                  _params(ctx, "llm", ["</answer>"]))
    trajs = []
    for q, s, c in zip(qs, sent, outs, strict=True):
        t = _traj(ctx, q, "redact_direct")  # what it tried to send is the redacted text, measured like any message
        t.turns.append(Turn(role="redactor", raw="", action=protocol.MESSAGE, content=s,
                            think=f"redactor: {ctx.redactor}"))  # a program, not a model: no tokens
        ans = _answer_of(c.text) or (c.text.strip().splitlines() or [None])[-1]
        t.turns.append(_turn("llm", c, protocol.ANSWER, ans or "", sent=s))
        trajs.append(_close(t, ans, c))
    return trajs


async def _static_rewrite(ctx: StrategyContext, qs: list[Question]) -> list[Trajectory]:
    rewrites = await ctx.slm.generate(
        [_conv(load_prompt("slm_rewrite"), q.question) for q in qs],
        _params(ctx, "slm", ["</message>"]))
    trajs = [_traj(ctx, q, "static_rewrite") for q in qs]
    guard = _guard(ctx)
    sent: list[str] = []
    for q, t, c in zip(qs, trajs, rewrites, strict=True):
        m = _MESSAGE_RE.search(c.text)
        msg = (m.group(1) if m else c.text).strip() or q.question
        t.turns.append(_turn("slm", c, protocol.MESSAGE, msg, errors=[] if m else ["no <message>"]))
        if guard is not None:
            g = guard.check(msg, q.privacy_items, q.meta.get("private_terms"))
            t.turns[-1].guard = g.action
            msg = g.text if g.allowed else "(withheld)"
        sent.append(msg)
    replies = await ctx.llm.generate([_conv(load_prompt("llm_tool"), s) for s in sent],
                                     _params(ctx, "llm", list(protocol.LLM_STOP)))
    composes = []
    for q, t, s, c in zip(qs, trajs, sent, replies, strict=True):
        p = protocol.parse_llm_turn(c.text)
        t.turns.append(_turn("llm", c, protocol.INFORMATION, p.content, sent=s, errors=p.errors, think=p.reasoning))
        notes = f"{q.question}\n\nExpert notes:\n{p.content}"
        composes.append(_conv(load_prompt("slm_compose"), notes))
    finals = await ctx.slm.generate(composes, _params(ctx, "slm", ["</answer>"]))
    for t, r, c in zip(trajs, replies, finals, strict=True):
        p = protocol.parse_slm_turn(c.text)
        t.turns.append(_turn("slm", c, p.action, p.content, errors=p.errors, think=p.think))
        _close(t, _answer_of(c.text), r if r.error else c)
    return trajs


async def _cascade(ctx: StrategyContext, qs: list[Question]) -> list[Trajectory]:
    outs = await ctx.slm.generate(
        [_conv(load_prompt("slm_confident"), q.question) for q in qs],
        _params(ctx, "slm", ["</confidence>"]))
    trajs, defer = [], []
    for q, c in zip(qs, outs, strict=True):
        t, p = _traj(ctx, q, "cascade"), protocol.parse_slm_turn(c.text.split("<confidence>")[0])
        m = _CONFIDENCE_RE.search(c.text)
        conf = float(m.group(1)) if m else 0.0
        t.turns.append(_turn("slm", c, "confidence", f"{conf:g}", errors=[] if m else ["no <confidence>"],
                             think=p.think))
        ans = _answer_of(c.text)
        if ans is not None and conf >= ctx.cascade_threshold:
            _close(t, ans, c)
        else:
            t.raw_question_sent = True
            defer.append((q, t))
        trajs.append(t)
    if defer:
        deferred = await _llm_alone(ctx, [q for q, _ in defer], "llm_direct")
        for (_, t), d in zip(defer, deferred, strict=True):
            t.turns.extend(d.turns)
            t.final_answer, t.stop_reason, t.format_ok, t.error = d.final_answer, d.stop_reason, d.format_ok, d.error
    return trajs


async def _plan_execute(ctx: StrategyContext, qs: list[Question]) -> list[Trajectory]:
    sent = [q.question for q in qs]  # the raw question goes to the planner: a leak by construction
    plans = await ctx.llm.generate([_conv(load_prompt("llm_plan"), s) for s in sent],
                                   _params(ctx, "llm", ["</information>"]))
    trajs, execs = [], []
    for q, s, c in zip(qs, sent, plans, strict=True):
        t, p = _traj(ctx, q, "plan_execute", raw_sent=True), protocol.parse_llm_turn(c.text)
        t.turns.append(_turn("llm", c, "plan", p.content, sent=s, errors=p.errors, think=p.reasoning))
        execs.append(_conv(load_prompt("slm_execute"), f"{s}\n\nPlan:\n{p.content}"))
        trajs.append(t)
    finals = await ctx.slm.generate(execs, _params(ctx, "slm", ["</answer>"]))
    for t, pl, c in zip(trajs, plans, finals, strict=True):
        p = protocol.parse_slm_turn(c.text)
        t.turns.append(_turn("slm", c, p.action, p.content, errors=p.errors, think=p.think))
        _close(t, _answer_of(c.text), pl if pl.error else c)
    return trajs


def _guard(ctx: StrategyContext):
    if ctx.config.guard == "off":
        return None
    from seekhelp.privacy import OutgoingGuard

    return OutgoingGuard(mode=ctx.config.guard)


_RUNNERS: dict[str, Callable[[StrategyContext, list[Question]], Awaitable[list[Trajectory]]]] = {
    "dynamic": _dynamic,
    "slm_cot": _slm_cot,
    "llm_direct": lambda ctx, qs: _llm_alone(ctx, qs, "llm_direct"),
    "llm_cot": lambda ctx, qs: _llm_alone(ctx, qs, "llm_cot"),
    "static_rewrite": _static_rewrite,
    "tool_llm": _tool_llm,
    "cascade": _cascade,
    "plan_execute": _plan_execute,
    "redact_direct": _redact_direct,
}


async def run_strategy(name: str, ctx: StrategyContext, questions: list[Question]) -> list[Trajectory]:
    if name not in _RUNNERS:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    ctx = replace(ctx, llm=grounded(ctx.llm, ctx.grounder), grounder=None)  # one grounding for every strategy
    return await _RUNNERS[name](ctx, questions)
