"""Deterministic judgments of a trajectory (answer correctness, lexical leak detector) and reward rows.

Pipelines, the RL loop and the eval harness all store their verdicts through these functions, so a judgment means
the same thing wherever it was made.
"""

import json

from seekhelp.metrics import exact_match, f1
from seekhelp.privacy import detect_leaks
from seekhelp.records import Question, Trajectory


def leaked_items(q: Question, t: Trajectory) -> list[str]:
    """Privacy items the detector finds in what left the device (the raw question counts as all of them)."""
    if t.raw_question_sent:
        return list(q.privacy_items)
    return sorted({item for m in t.messages for item in detect_leaks(m, q.privacy_items)})


def deterministic_judgments(q: Question, t: Trajectory) -> list[dict]:
    leaked = leaked_items(q, t)
    return [
        {"trajectory_id": t.id, "judge": "em", "value": exact_match(t.final_answer, q.answers)},
        {"trajectory_id": t.id, "judge": "f1", "value": f1(t.final_answer, q.answers)},
        {"trajectory_id": t.id, "judge": "leak_detector", "value": float(bool(leaked)),
         "label": "leak" if leaked else "clean", "details": json.dumps({"items": leaked})},
    ]


def reward_judgments(trajectory_id: str, breakdown) -> list[dict]:
    """The reward and each of its components as judgment rows (judge names: reward, r_format, ...)."""
    d = breakdown.to_dict()
    rows = [{"trajectory_id": trajectory_id, "judge": "reward", "value": d["total"]}]
    rows += [{"trajectory_id": trajectory_id, "judge": k, "value": d[k]}
             for k in ("r_format", "r_quality", "r_feedback", "r_privacy", "r_efficiency")]
    return rows
