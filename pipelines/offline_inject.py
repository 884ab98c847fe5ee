"""Deterministic privacy injection for the offline geography seeds (no LLM needed).

Follows the paper's three steps with templates instead of an LLM: (1) invent personal facts about the user and
a person of the user's (a faker name, a relation) tied to the seed's core entity; (2) restate the core fact so
the answer is only referred to through those personal facts; (3) ask about the personal fact that stands for
the answer. The answers stay exactly the seed's. The paper's second check is deterministic here: a sample whose
answer (or an alias) appears in the question, or in a private fact, is dropped into `rejected` with a reason.

Four kinds of question (`pipelines.relations.KINDS`, in ``meta["kind"]``): one fact missing, two hops, self-contained
(the user states the public fact that settles it: the one kind exempt from the answer-in-question check, marked
``meta["answer_alone"]``) and underspecified (the place is named in one private sentence and only referred to in
the question, so the natural first request lacks it). A question marked held out uses only held-out templates.

Every private fact is woven into the question text: the SLM reads the question alone (the privacy items are
labels for the judge, the detector, the reward and the guard), so nothing may hide in the label list. Which
questions are "easy" is not decided here: it is the paper's definition, the SLM alone answers correctly,
measured per SLM by the eval (an slm_cot run) and by the RL loop.
"""

import random
import re
from dataclasses import dataclass, field
from typing import Any

from faker import Faker

from pipelines.relations import INTROS, KINDS, LEADS, PRIVATE, RELATIONS, subject_text
from pipelines.seeds import Seed
from seekhelp.knowledge import cap, fold
from seekhelp.records import Question, content_hash

LOCALES = ("en_US", "en_GB", "es_ES", "fr_FR", "de_DE", "it_IT", "pt_BR", "nl_NL", "pl_PL", "sv_SE")
KIN = {  # how the person is related to the user
    "f": ["sister", "aunt", "cousin", "colleague", "neighbour", "friend", "niece", "grandmother", "flatmate",
          "manager", "sister-in-law", "godmother"],
    "m": ["brother", "uncle", "cousin", "colleague", "neighbour", "friend", "nephew", "grandfather", "flatmate",
          "manager", "brother-in-law", "godfather"],
}
PRONOUNS = {"f": {"he": "she", "him": "her", "his": "her"}, "m": {"he": "he", "him": "him", "his": "his"}}
WHEN = ["next spring", "in March", "this autumn", "after the summer", "in two weeks", "next year", "in January",
        "at the end of the month"]
HARD = PRIVATE  # the private question templates per property live in the relation table


@dataclass
class InjectResult:
    questions: list[Question] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"seed": seed dict, "reason": str}


def _norm(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", fold(text))
    return " " + " ".join(w for w in words if w not in ("a", "an", "the")) + " "


def answer_in(text: str, answers: list[str]) -> str | None:
    """The first alias found in the text (normalized, whole words), or None."""
    t = _norm(text)
    return next((a for a in answers if _norm(a).strip() and _norm(a) in t), None)


class Injector:
    """Turns geography seeds into privacy-laden Questions; deterministic given `seed`."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._fakers = {loc: Faker(loc) for loc in LOCALES}

    def _person(self, rng: random.Random, public: str) -> dict[str, str]:
        """A person of the user's whose name shares nothing with the public side of the question."""
        for _ in range(50):
            fake = self._fakers[rng.choice(LOCALES)]
            fake.seed_instance(rng.getrandbits(32))
            sex = rng.choice("fm")
            first = fake.first_name_female() if sex == "f" else fake.first_name_male()
            last = fake.last_name()
            parts = [p for p in f"{first} {last}".replace("-", " ").split() if len(p) > 1]
            if all(fold(p) not in public for p in parts) and first.isalpha():
                return {"first": first, "last": last, "name": f"{first} {last}", "sex": sex,
                        "rel": rng.choice(KIN[sex])}
        raise ValueError("could not draw a person whose name avoids the public text")

    def _templates(self, s: Seed, slots: dict[str, str], rng: random.Random) -> list[tuple[list[str], str, bool]]:
        """(privacy items, question, held out) candidates for the seed's kind, its place slots filled in `slots`:
        only held-out templates for a question marked so, only seen ones otherwise (a held-out relation takes all)."""
        meta, hops = s.meta, s.meta["hops"]
        first = RELATIONS[hops[0]["relation"]]
        if meta["kind"] == "underspecified":  # one private sentence naming the place, then the place only referred to
            slots["place"] = subject_text(first.name, hops[0]["subject"])
            out = [(items, f"{intro} {cap(there)}", held) for items, intro, held in INTROS for there in first.there]
        else:
            if meta["property"] == "country":
                slots["city"], slots["link"] = hops[0]["subject"], rng.choice(first.link)
            elif len(hops) == 1:
                slots["place"] = subject_text(first.name, hops[0]["subject"])
            else:
                slots["place"] = rng.choice(first.pivot).format(x=hops[0]["subject"])
            out = list(PRIVATE[meta["property"]])
        if meta.get("heldout_reason") != "relation":
            out = [t for t in out if t[2] == (meta.get("heldout_reason") == "template")]
        rng.shuffle(out)
        return out

    def inject_one(self, s: Seed) -> Question:
        """One Question from one seed; raises ValueError with the rejection reason."""
        meta = s.meta
        if meta.get("kind") not in KINDS or meta.get("property") not in PRIVATE or not meta.get("hops"):
            raise ValueError("seed has no offline decomposition (meta kind/hops)")
        rng = random.Random(content_hash("inject", self.seed, s.question, s.answers))
        hops = meta["hops"]
        public = fold(" ".join([s.question, *s.answers, *(h["question"] + " " + h["fact"] for h in hops)]))
        person = self._person(rng, public)
        slots = {**person, **PRONOUNS[person["sex"]], "when": rng.choice(WHEN)}
        slots["He"] = cap(slots["he"])
        lead = ""
        if meta["kind"] == "self_contained":  # the user states the public fact that settles the question
            rel = RELATIONS[hops[0]["relation"]]
            state = rng.choice(rel.state).format(s=subject_text(rel.name, hops[0]["subject"]), o=hops[0]["object"])
            lead = rng.choice(LEADS).format(state=state, State=cap(state)) + " "
        reason = "no template for this kind"
        for items_t, question_t, held in self._templates(s, slots, rng):
            items = [cap(t.format(**slots)) for t in items_t]
            question = lead + cap(question_t.format(**slots))
            # the answer-in-question check (the paper's consistency check) holds for every kind but one: a
            # self-contained question names the answer on purpose, in the public fact the user states
            leaked = None if meta["kind"] == "self_contained" else answer_in(question, s.answers)
            in_items = answer_in(" ".join(items), s.answers)
            if leaked:
                reason = f"answer {leaked!r} appears in the question"
            elif in_items:
                reason = f"answer {in_items!r} appears in the private facts"
            else:
                keep = ("entities", "entity_names", "kind", "chain", "relations", "property", "answer_alone",
                        "heldout", "heldout_reason")
                return Question(
                    question=question, answers=list(s.answers), privacy_items=items, original_question=s.question,
                    source=s.source or "geo", split=s.split,
                    meta={**{k: meta.get(k) for k in keep}, "hops": hops,
                          "subquestions": [h["question"] for h in hops],
                          "private_terms": sorted({person["name"], person["first"], person["last"]}),
                          "template": content_hash(items_t, question_t, length=8), "template_heldout": held,
                          "seed_id": s.id},
                )
        raise ValueError(reason)

    def inject(self, seeds: list[Seed]) -> InjectResult:
        out = InjectResult()
        for s in seeds:
            try:
                out.questions.append(self.inject_one(s))
            except ValueError as e:
                out.rejected.append({"seed": s.to_dict(), "reason": str(e)})
        return out


def inject(seeds: list[Seed], seed: int = 0) -> InjectResult:
    """Privacy-injected Questions for the given geography seeds, plus the rejected ones with reasons."""
    return Injector(seed).inject(seeds)
