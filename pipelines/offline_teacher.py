"""A knowledge-driven teacher: ideal SLM <-> LLM dialogues written from a question's gold decomposition.

Per question kind (`meta["kind"]`, wording from `pipelines.relations`): a self-contained question is answered
alone, with no request; an other-fact question's first think names the fact it states and the one it leaves out
(the two kinds look alike: what is stated decides); otherwise the SLM thinks, sends only the objective
sub-question(s) (never a private fact), the LLM answers with the fact from the knowledge base, and the SLM answers
with the bare entity. Two-hop questions are asked either in one message or in two. An underspecified question first
gets the request that names no place; the LLM asks back with `<need>` (the wording of the offline experts,
`seekhelp.knowledge.need_text`), and the SLM supplies the missing PUBLIC detail, the place's name, never a private
one, before it gets the fact. (Read on validation, not adopted: naming the place at once in 80 % of them cut the SFT
model's LLM calls on underspecified questions from 1.90 to 1.13 over three seeds, but it asked less everywhere else
too: needs a fact asked -5.9 [-9.0, -3.1], states another fact asked -25.8, EM -1.7 [-6.9, +3.6]. The two-request
dialogues carry part of what teaches asking. Keeping the ask-back dialogue and adding a direct one for each of them
cut the calls to 1.49 at EM -0.6 [-6.4, +5.3], but needs-a-fact asked fell 2.8 [-6.2, +0.3], past the -2.0 its rule
allowed; not adopted either.)
Wording is varied by a seeded RNG, so N samples of one question differ.
The SLM side reads the question alone (seekhelp.conversation): the private facts are in its text.

`teacher_messages` turns a question and a teacher trajectory into the chat conversation the SLM is trained on
(see notes/CONTRACTS.md).
"""

import random
from typing import Any

from pipelines.relations import RELATIONS, subject_text
from seekhelp.conversation import slm_messages
from seekhelp.knowledge import cap, need_text, place_noun
from seekhelp.protocol import ANSWER, INFORMATION, MESSAGE, NEED, render_llm_turn, render_slm_turn
from seekhelp.records import Question, Trajectory, Turn, content_hash

TEACHER = "teacher-kb"
VERSION = "offline-teacher/7"

PREFIX = ["", "", "Quick question: ", "A factual question: "]
# Terse on purpose (every think token is generated in every rollout). Every first think opens with what the question
# asks for, then what it states, and only then decides: the decision is read off two phrases already written
# ("asks for the currency of Myanmar. It states that Myanmar is in Asia, which ..."): self-contained and other-fact
# thinks share every word up to "gives it" / "does not give it", so no earlier token can carry the decision.
# Measured on the 120 validation questions, demo SFT recipe (offline-teacher/6 put the decision first, "The question
# states that" / "states only that"): questions that state another fact asked 59.1 % (was 22.7 %, n=22), every
# question that needs a fact 89.6 % (82.3 %), self-contained answered alone 62.5 % (70.8 %, n=24), EM 45.8 % (50.0 %;
# paired difference -4.2 [-15.0, +6.7]), INScore 0.68 (0.67). A variant whose other-fact think read "It states only
# that" (the decision again one token after "states") asked on 9.1 % of them. Read, not adopted (offline-teacher/9,
# three SFT seeds, 120 validation questions): writing the stated fact as its relation's phrase ("It states a language
# spoken in Mali: French, which gives it") raised self-contained answered alone 76.4 -> 93.1 % (+16.7 [+5.6, +27.8]),
# needs-a-fact asked 95.8 -> 97.6 and other-fact asked 81.8 -> 92.4, but EM fell 3.1 [-8.3, +2.2], past the -1.0 its
# rule allowed. Read again after the expert's retrieval fix, on new seeds (45, 46; both arms trained again, same
# rule): EM 62.9 -> 56.7 (-6.2 [-11.2, -1.2]), answered alone 91.7 -> 95.8 (+4.2 [-4.2, +12.5], rule +5.0), asked
# -0.5, other-fact asked -2.3: not adopted. The demo's own thinks reached 91.7 % alone on these seeds.
THINK_ASK = [
    "The question asks for {need}. It does not state it. That is public, so I ask for it alone.",
    "The question asks for {need}. It does not state it; I ask for it without naming anyone.",
]
THINK_OTHER = [  # the question states another fact about the place: say which, and that it does not settle it
    "The question asks for {need}. It states that {stated}, which does not give it. That is public, so I ask for "
    "it alone.",
    "The question asks for {need}. It states that {stated}, which does not give it; I ask for it without naming "
    "anyone.",
]
THINK_FIRST_OF_TWO = [  # a two-hop plan is written out whole, so the second turn can read what is still missing
    "The question asks for {need}, and then {next}. It states neither. I ask for the first part alone.",
    "The question asks for {need}, and then {next}. It states neither; I ask for the first without naming anyone.",
]
THINK_BOTH = [  # both hops in one request
    "The question asks for {need}. It states neither. That is public, so I ask for both at once.",
    "The question asks for {need}. It states neither; I ask for both without naming anyone.",
]
THINK_NEXT = [
    "The reply says {gist}. I still need {need}.",
    "The reply says {gist}. Next I need {need}.",
]
THINK_FINAL = [
    "The reply says {gist}. Answer: {answer}.",
    "The reply says {gist}, so the answer is {answer}.",
]
THINK_ALONE = [
    "The question asks for {need}. It states that {gist}, which gives it. Nothing is missing: {answer}.",
    "The question asks for {need}. It states that {gist}, which gives it; no request is needed: {answer}.",
]
THINK_VAGUE = [
    "The question asks for {need}. It does not state it. I ask without personal details.",
    "The question asks for {need}. It does not state it; a short public question will do.",
]
THINK_SUPPLY = [
    "The reply asks which {noun}. {S} is public; I name it.",
    "The reply asks which {noun}: {s}. A place name is not private.",
]
SUPPLY = ["I mean {s}. {ask}", "It is {s}. {ask}", "{ask}", "Sorry, I mean {s}: {ask}"]
NEED_REASONING = [
    "The request does not say which {noun} it is about, so I cannot look anything up.",
    "I could only guess here: no {noun} is named.",
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
    return subject_text(hop["relation"], hop["subject"])


def _gist(facts: list[str]) -> str:
    """Fact sentences as one clause for a think block ("the capital of Peru is Lima")."""
    parts = [f.rstrip(".") for f in facts]
    parts = [p[0].lower() + p[1:] if p.split()[0] in ("The", "Languages") else p for p in parts]
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

    def ask_vague(self, think: str, message: str, noun: str) -> None:
        """A request that names no place, and the expert's <need> for it."""
        self.turns.append(Turn(role="slm", raw=render_slm_turn(think, MESSAGE, message), action=MESSAGE,
                               content=message, think=think))
        reasoning, need = self.pick(NEED_REASONING, noun=noun), need_text(noun)
        self.turns.append(Turn(role="llm", raw=render_llm_turn(reasoning, NEED, need), action=NEED, content=need,
                               think=reasoning, sent=message))

    def answer(self, think: str, answer: str) -> None:
        self.turns.append(Turn(role="slm", raw=render_slm_turn(think, ANSWER, answer), action=ANSWER,
                               content=answer, think=think))

    def message(self, hop: dict[str, Any]) -> str:
        text = self.pick(PREFIX) + cap(self.pick(RELATIONS[hop["relation"]].ask, s=_subject(hop)))
        return _clean(text, self.private, hop["question"])


def _write(q: Question, rng: random.Random, combined: bool) -> list[Turn]:
    """One dialogue; `combined`: a two-hop question asks both hops in one message (else one message per hop)."""
    w, hops, answer = _Writer(q, rng), q.meta["hops"], q.answers[0]
    first = hops[0]
    rel = RELATIONS[first["relation"]]
    need = rel.need.format(s=_subject(first))
    gist = _gist([h["fact"] for h in hops])
    if q.meta.get("answer_alone"):  # self-contained: the question states the fact, so no request at all
        w.answer(w.pick(THINK_ALONE, need=need, gist=gist, answer=answer), answer)
        return w.turns
    if q.meta.get("kind") == "underspecified":  # the natural request names no place; the expert asks back
        vague = rel.need.format(s="that place")
        request = w.pick(rel.vague)
        noun = place_noun(request)  # what the offline experts ask back for this very request
        w.ask_vague(w.pick(THINK_VAGUE, need=vague), request, noun)
        s = _subject(first)
        supply = _clean(w.pick(SUPPLY, s=s, ask=cap(w.pick(rel.ask, s=s))), w.private, first["question"])
        w.ask(w.pick(THINK_SUPPLY, noun=noun, s=s, S=cap(s)), supply, [first["fact"]])
    elif len(hops) == 1 and q.meta.get("kind") == "other_fact":
        side = q.meta["side"]
        srel = RELATIONS[side["relation"]]
        stated = srel.state[0].format(s=subject_text(srel.name, side["subject"]), o=side["object"])
        w.ask(w.pick(THINK_OTHER, stated=stated, need=need), w.message(first), [first["fact"]])
    elif len(hops) == 1:
        w.ask(w.pick(THINK_ASK, need=need), w.message(first), [first["fact"]])
    elif combined:  # both hops in one message
        second = RELATIONS[hops[1]["relation"]]
        combined = w.message(first).rstrip("?") + ", and " + w.pick(second.follow_up)
        combined = _clean(combined, w.private, q.original_question)
        both = f"{need}, and then {second.need_next}"
        w.ask(w.pick(THINK_BOTH, need=both), combined, [first["fact"], hops[1]["fact"]])
    else:  # one message per hop
        second = hops[1]
        plan = w.pick(THINK_FIRST_OF_TWO, need=need, next=RELATIONS[second["relation"]].need_next)
        w.ask(plan, w.message(first), [first["fact"]])
        need2 = RELATIONS[second["relation"]].need.format(s=_subject(second))
        w.ask(w.pick(THINK_NEXT, gist=_gist([first["fact"]]), need=need2), w.message(second), [second["fact"]])
    w.answer(w.pick(THINK_FINAL, gist=gist, answer=answer), answer)
    return w.turns


def teacher_trajectories(question: Question, n: int = 1, seed: int = 0) -> list[Trajectory]:
    """N ideal dialogues for one question (sample_index 0..n-1), each worded by its own seeded RNG."""
    if not question.meta.get("hops"):
        raise ValueError(f"question {question.id}: meta has no 'hops' (gold decomposition); the offline teacher "
                         "needs one")
    config = content_hash(VERSION, seed, length=12)
    # two-hop variants alternate over the samples (n >= 2 holds both; which one comes first is drawn per question)
    first = random.Random(content_hash("teacher-variant", seed, question.id)).random() < 0.5
    out = []
    for i in range(n):
        rng = random.Random(content_hash("teacher", seed, question.id, i))
        turns = _write(question, rng, combined=first == (i % 2 == 0))
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
