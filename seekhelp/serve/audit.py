"""The audit trail of one served request: what left the machine, what came back, what the guard did, what it cost.

It rides in the response as an extension object (`"seekhelp": {...}`) so an app can log or show it; the
standard fields of the chat completion stay exactly as an OpenAI client expects. Everything in it comes from the
episode's Trajectory (`Turn.sent` is, by the runtime's contract, the exact user-side text of each upstream call),
so the trail is what happened, not a reconstruction.
"""

from collections.abc import Mapping

from seekhelp.evaluation.aggregate import cost_usd
from seekhelp.records import Trajectory
from seekhelp.serve.engine import Served

# how a stopped episode shows up as an OpenAI finish_reason
FINISH_REASON = {"answer": "stop", "guard": "content_filter", "n_max": "length", "format_error": "stop"}


def audit_trail(served: Served, guard_mode: str, prices: Mapping[str, Mapping[str, float]] | None = None) -> dict:
    t = served.trajectory
    upstream, guard = [], []
    for i, turn in enumerate(t.turns):
        if turn.role == "llm":
            upstream.append({"turn": i, "sent": turn.sent, "reply": turn.raw, "action": turn.action,
                             "prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens,
                             "latency_s": round(turn.latency_s, 4), "error": turn.errors[0] if turn.errors else None})
        if turn.role == "slm" and turn.guard:
            guard.append({"turn": i, "action": turn.guard, "message": turn.content})
    (sp, sc), (lp, lc) = t.tokens("slm"), t.tokens("llm")
    return {
        "trajectory_id": t.id,
        "request_id": served.request_id,
        "strategy": t.strategy,
        "slm": t.slm,
        "llm": t.llm,
        "stop_reason": t.stop_reason,
        "error": t.error,
        "raw_question_sent": t.raw_question_sent,  # true only for strategies that send the question itself
        "upstream": upstream,  # every request that left the machine, with the upstream's reply
        "guard": {"mode": guard_mode, "actions": guard},
        "tokens": {"slm": {"prompt": sp, "completion": sc}, "llm": {"prompt": lp, "completion": lc}},
        "cost_usd": cost_usd(t, prices or {}),
        "batch_size": served.batch_size,
        "queue_s": round(served.queue_s, 4),
        "run_s": round(served.run_s, 4),
        "turns": [turn.to_dict() for turn in t.turns],
    }


def finish_reason(t: Trajectory) -> str:
    return FINISH_REASON.get(t.stop_reason, "stop")


def usage(t: Trajectory) -> dict:
    """OpenAI `usage`: tokens of both roles together (the audit trail has them per role)."""
    (sp, sc), (lp, lc) = t.tokens("slm"), t.tokens("llm")
    return {"prompt_tokens": sp + lp, "completion_tokens": sc + lc, "total_tokens": sp + sc + lp + lc}
