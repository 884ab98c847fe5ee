"""A knowledge-driven teacher: ideal SLM <-> LLM dialogues written from a question's gold decomposition.

For a hard question the SLM thinks, sends only the objective sub-question(s) (never a private fact), the LLM
answers with the fact from the knowledge base, and the SLM answers with the bare entity. Two-hop questions are
asked either in one message or in two. Wording is varied by a seeded RNG, so N samples of one question differ.
The SLM side reads the question alone (seekhelp.conversation): the private facts are in its text.

`teacher_messages` turns a question and a teacher trajectory into the chat conversation the SLM is trained on
(see notes/CONTRACTS.md).
"""

import random
from typing import Any

from seekhelp.conversation import slm_messages
from seekhelp.knowledge import cap, the
from seekhelp.protocol import ANSWER, INFORMATION, MESSAGE, render_llm_turn, render_slm_turn
from seekhelp.records import Question, Trajectory, Turn, content_hash

TEACHER = "teacher-kb"
VERSION = "offline-teacher/1"

ASK = {  # objective phrasings of one hop, {s} = the subject
    "capital": ["What is the capital of {s}?", "Which city is the capital of {s}?",
                "Could you tell me the capital city of {s}?"],
    "capital_of": ["Which country has {s} as its capital?", "{s} is the capital of which country?",
                   "Of which country is {s} the capital?"],
    "currency": ["What currency is used in {s}?", "Which currency does {s} use?",
                 "What is the official currency of {s}?"],
    "continent": ["Which continent is {s} on?", "On what continent is {s} located?",
                  "What continent does {s} belong to?"],
    "city_country": ["In which country is {s}?", "Which country is the city of {s} in?",
                     "{s} is a city in which country?"],
}
FOLLOW_UP = {  # the second hop, referring back to the first hop's answer
    "capital": ["what is that country's capital?", "what is its capital city?"],
    "currency": ["which currency does that country use?", "what is its currency?"],
    "continent": ["which continent is that country on?", "on which continent does it lie?"],
}
NEED = {  # what the SLM is missing, as a noun phrase
    "capital": "the capital of {s}", "capital_of": "which country has {s} as its capital",
    "currency": "the currency of {s}", "continent": "which continent {s} is on",
    "city_country": "which country {s} is in",
}
NEED_NEXT = {"capital": "that country's capital", "currency": "that country's currency",
             "continent": "the continent that country is on"}
PREFIX = ["", "", "Quick question: ", "A factual question: "]
THINK_ASK = [
    "The personal details only tell me which place matters; what I am missing is {need}. That is a public fact, "
    "so I will ask the expert for it without mentioning anyone.",
    "To answer I need {need}, and I am not sure of it. I'll send only that objective question and keep the "
    "names and plans to myself.",
    "This depends on {need}, a general-knowledge fact worth checking with the expert. My request must say "
    "nothing about the user or the user's people.",
    "Let me split the private part from the public part. The public part is {need}; I will ask about that alone.",
]
THINK_NEXT = [
    "The reply says {gist}. I still need {need}, which is public too, so I ask for it next.",
    "Good: {gist}. Next I need {need}; again nothing personal has to go out.",
    "So {gist}. One more public fact is missing: {need}.",
]
THINK_FINAL = [
    "The expert's reply settles it: {gist}. So the answer is {answer}.",
    "From the reply, {gist}. Combined with the private details, the answer is {answer}.",
    "That gives me the missing fact ({gist}), which answers the question: {answer}.",
    "The reply confirms that {gist}. I can answer now: {answer}.",
]
LLM_REASONING = [
    "This is a request for a public fact; no personal context is needed to answer it.",
    "The question is objective and self-contained, so I can answer it directly.",
    "General geographic knowledge covers this.",
    "A plain factual question; I know the answer.",
]
INFO = ["{facts}", "Here is the relevant fact: {facts}", "{facts} Hope this helps.",
        "According to public geographic data: {facts}"]


def _subject(hop: dict[str, Any]) -> str:
    return hop["subject"] if hop["relation"] in ("capital_of", "city_country") else the(hop["subject"])


def _gist(facts: list[str]) -> str:
    """Fact sentences as one clause for a think block ("the capital of Peru is Lima")."""
    parts = [f.rstrip(".") for f in facts]
    parts = [p[0].lower() + p[1:] if p.startswith("The ") else p for p in parts]
    return " and ".join(parts)


def _clean(message: str, private: list[str], fallback: str) -> str:
    """The message, unless a private term slipped in (it never should): then the plain hop question."""
    low = message.lower()
    return fallback if any(t.lower() in low for t in private if t) else message


class _Writer:
    def __init__(self, q: Question, rng: random.Random) -> None:
        self.q, self.rng, self.turns = q, rng, []
        self.private = list(q.meta.get("private_terms", []))

    def pick(self, options: list[str], **slots: str) -> str:
        return self.rng.choice(options).format(**slots)

    def ask(self, think: str, message: str, facts: list[str]) -> None:
        self.turns.append(Turn(role="slm", raw=render_slm_turn(think, MESSAGE, message), action=MESSAGE,
                               content=message, think=think))
        reasoning = self.pick(LLM_REASONING)
        info = self.pick(INFO, facts=" ".join(facts))
        self.turns.append(Turn(role="llm", raw=render_llm_turn(reasoning, INFORMATION, info), action=INFORMATION,
                               content=info, think=reasoning, sent=message))

    def answer(self, think: str, answer: str) -> None:
        self.turns.append(Turn(role="slm", raw=render_slm_turn(think, ANSWER, answer), action=ANSWER,
                               content=answer, think=think))

    def message(self, hop: dict[str, Any]) -> str:
        text = self.pick(PREFIX) + cap(self.pick(ASK[hop["relation"]], s=_subject(hop)))
        return _clean(text, self.private, hop["question"])


def _write(q: Question, rng: random.Random) -> list[Turn]:
    w, hops, answer = _Writer(q, rng), q.meta["hops"], q.answers[0]
    first = hops[0]
    need = NEED[first["relation"]].format(s=_subject(first))
    if len(hops) == 1:
        w.ask(w.pick(THINK_ASK, need=need), w.message(first), [first["fact"]])
    elif rng.random() < 0.5:  # both hops in one message
        second = hops[1]
        combined = w.message(first).rstrip("?") + ", and " + w.pick(FOLLOW_UP[second["relation"]])
        combined = _clean(combined, w.private, q.original_question)
        both = f"{need}, and then {NEED_NEXT[second['relation']]}"
        w.ask(w.pick(THINK_ASK, need=both), combined, [first["fact"], second["fact"]])
    else:  # one message per hop
        second = hops[1]
        w.ask(w.pick(THINK_ASK, need=need), w.message(first), [first["fact"]])
        need2 = NEED[second["relation"]].format(s=_subject(second))
        w.ask(w.pick(THINK_NEXT, gist=_gist([first["fact"]]), need=need2), w.message(second), [second["fact"]])
    w.answer(w.pick(THINK_FINAL, gist=_gist([h["fact"] for h in hops]), answer=answer), answer)
    return w.turns


def teacher_trajectories(question: Question, n: int = 1, seed: int = 0) -> list[Trajectory]:
    """N ideal dialogues for one question (sample_index 0..n-1), each worded by its own seeded RNG."""
    if not question.meta.get("hops"):
        raise ValueError(f"question {question.id}: meta has no 'hops' (gold decomposition); the offline teacher "
                         "needs one")
    config = content_hash(VERSION, seed, length=12)
    out = []
    for i in range(n):
        rng = random.Random(content_hash("teacher", seed, question.id, i))
        turns = _write(question, rng)
        out.append(Trajectory(question_id=question.id, strategy="teacher", slm=TEACHER, llm=TEACHER, turns=turns,
                              final_answer=turns[-1].content, stop_reason="answer", format_ok=True,
                              sample_index=i, config_hash=config))
    return out


def teach(questions: list[Question], n: int = 1, seed: int = 0) -> list[Trajectory]:
    """Teacher dialogues for many questions (those without a decomposition are skipped)."""
    return [t for q in questions if q.meta.get("hops") for t in teacher_trajectories(q, n, seed)]


def teacher_messages(question: Question, trajectory: Trajectory, system_prompt: str) -> list[dict[str, str]]:
    """The SLM-side chat conversation of a trajectory (the shared layout in seekhelp.conversation)."""
    return slm_messages(system_prompt, question, trajectory.turns)
