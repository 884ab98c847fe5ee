"""Deterministic privacy injection for the offline geography seeds (no LLM needed).

Follows the paper's three steps with composed text instead of an LLM: (1) invent personal facts about the user and
a person of the user's (a faker name, a relation) tied to the seed's core entity; (2) restate the core fact so the
answer is only referred to through those personal facts; (3) ask about the personal fact that stands for the
answer. The answers stay exactly the seed's. The paper's second check is deterministic here: a composition whose
answer (or an alias) appears in the question, or in a private fact, is drawn again, and a seed with no clean
composition is dropped into `rejected` with a reason.

Every question is composed from independent slot families (`pipelines.families`): the person, the frame (life
event), the question form, the register, an optional sensitive detail (health, money, ids, addresses), the stated
fact of self-contained and other-fact questions and where it sits, and how a bridge place is referred to. Training
questions use seen members only; a validation/test question held out on a family (``meta["heldout_reason"]``) uses
that family's held-out members. The members used are in ``meta["members"]``, the composed skeleton's hash in
``meta["template"]``.

Five kinds (`pipelines.relations.KINDS`, in ``meta["kind"]``): one fact missing, two hops, self-contained (the user
states the public fact that settles it, anywhere in the question: the one kind exempt from the answer-in-question
check, marked ``meta["answer_alone"]``), other fact (the user states a different fact about the place, which does not
settle it) and underspecified (the place is named in one private sentence and only referred to in the question).

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

from pipelines.families import (
    DETAIL_SHARE,
    DETAILS,
    FORMS,
    FRAMES,
    ILLNESSES,
    INTROS,
    KIN_HELDOUT,
    KIN_SEEN,
    REGISTERS,
    STATEMENTS,
    WHEN,
    WHO_HELDOUT,
    WHO_SEEN,
    pick,
)
from pipelines.relations import KINDS, RELATIONS, subject_text
from pipelines.seeds import Seed
from seekhelp.knowledge import cap, fold
from seekhelp.records import Question, content_hash

LOCALES = ("en_US", "en_GB", "es_ES", "fr_FR", "de_DE", "it_IT", "pt_BR", "nl_NL", "pl_PL", "sv_SE")
PRONOUNS = {"f": {"he": "she", "him": "her", "his": "her"}, "m": {"he": "he", "him": "him", "his": "his"}}
ATTEMPTS = 12  # compositions tried per seed before it is rejected
PROBE_DETAILS = tuple(sorted({d[0] for d in DETAILS[0]}))  # what a probe may put in every question: seen details only


@dataclass(frozen=True)
class ExtraDetail:
    """One seen sensitive detail added, from a draw of its own, to `share` of the questions of `kinds` in `splits`
    that drew no detail (e.g. passports beside the place-naming sentence the supply step after `<need>` copies)."""

    detail: str
    share: float
    kinds: tuple[str, ...] = ("underspecified",)
    splits: tuple[str, ...] = ("train",)

    def __post_init__(self) -> None:
        check_seen_detail(self.detail)
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"share {self.share!r} is not between 0 and 1")
        if bad := sorted(set(self.kinds) - set(KINDS)):
            raise ValueError(f"kinds {bad} are none of {list(KINDS)}")
        if bad := sorted(set(self.splits) - {"train", "validation", "test"}):
            raise ValueError(f"splits {bad} are none of train, validation, test")


def check_seen_detail(detail: str) -> None:
    """A probe or an extra detail uses a seen detail only: a held-out one would reach no training question."""
    if detail not in PROBE_DETAILS:
        raise ValueError(f"detail {detail!r} is none of the seen sensitive details {list(PROBE_DETAILS)}")


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


def _seen_detail(name: str, members: list[str], heldout_used: list[bool]) -> tuple[str, str, str]:
    """The first seen member of DETAILS of that kind, recorded as the question's detail member."""
    i = next(i for i, d in enumerate(DETAILS[0]) if d[0] == name)
    members.append(f"detail:all:{i}")
    heldout_used.append(False)
    return DETAILS[0][i]


class Injector:
    """Turns geography seeds into privacy-laden Questions; deterministic given `seed`."""

    def __init__(self, seed: int = 0, detail: str | None = None, extra: ExtraDetail | None = None) -> None:
        self.seed, self.detail, self.extra = seed, detail, extra
        if detail is not None:
            check_seen_detail(detail)
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
                return {"first": first, "last": last, "name": f"{first} {last}", "sex": sex, "locale": fake}
        raise ValueError("could not draw a person whose name avoids the public text")

    def _detail_values(self, rng: random.Random, fake: Faker) -> dict[str, str]:
        return {"illness": rng.choice(ILLNESSES), "amount": f"{rng.randint(8, 95) * 1000 + rng.choice((0, 500)):,}",
                "passport": f"{rng.choice('CKPXY')}{rng.randint(10**7, 10**8 - 1)}",
                "address": " ".join(fake.street_address().split()), "phone": fake.phone_number(), "iban": fake.iban()}

    def compose(self, s: Seed, person: dict[str, Any], rng: random.Random) -> tuple[str, list[str], dict[str, Any]]:
        """One question for the seed: (question, privacy items, meta additions). Families take seen members, and the
        one named by ``meta["heldout_reason"]`` takes held-out members."""
        meta, hops = s.meta, s.meta["hops"]
        held, members, heldout_used = meta.get("heldout_reason"), [], []

        def take(family: str, sub: str, table: tuple[tuple, tuple]) -> Any:
            p = pick(rng, family, sub, table, held == family)
            members.append(p.key)
            heldout_used.append(p.heldout)
            return p.value

        sex = person["sex"]
        rel = take("who", f"kin-{sex}", (KIN_SEEN[sex], KIN_HELDOUT[sex]))
        who_start, who_mid = take("who", "phrase", (WHO_SEEN, WHO_HELDOUT))
        slots = {**{k: person[k] for k in ("first", "last", "name")}, **PRONOUNS[sex], "rel": rel,
                 "when": rng.choice(WHEN)}
        slots |= {"He": cap(slots["he"]), "His": cap(slots["his"]), "Who": who_start.format(**slots),
                  "who": who_mid.format(**slots)}
        kind, prop, first = meta["kind"], meta["property"], RELATIONS[hops[0]["relation"]]
        if kind == "underspecified":  # one private sentence naming the place, then the place only referred to
            slots["place"] = subject_text(first.name, hops[0]["subject"])
            frame = take("frame", "intro", INTROS)
            form = take("form", f"there-{first.name}", (first.there, first.there_heldout))
        else:
            if prop == "country":
                slots["city"] = hops[0]["subject"]
                slots["link"] = take("reference", f"link-{first.name}", (first.link, first.link_heldout))
            elif len(hops) == 1:
                slots["place"] = subject_text(first.name, hops[0]["subject"])
            else:
                pivot = take("reference", f"pivot-{first.name}", (first.pivot, first.pivot_heldout))
                slots["place"] = pivot.format(x=hops[0]["subject"])
            frame = take("frame", prop, FRAMES[prop])
            form = take("form", prop, FORMS[prop])
        items, parts, position, statement = list(frame.items), [frame.text], None, ""
        if kind in ("self_contained", "other_fact"):  # a public fact the user states: the settling one, or another
            stated = hops[0] if kind == "self_contained" else meta["side"]
            srel = RELATIONS[stated["relation"]]
            # one draw of fixed width whatever the list's length, so a minimal pair's skeletons stay the same
            wording = srel.state[int(rng.random() * len(srel.state))]
            state = wording.format(s=subject_text(srel.name, stated["subject"]), o=stated["object"])
            slots |= {"state": state, "State": cap(state)}
            position, statement = take("statement", "all", STATEMENTS)
        detail = None
        if held == "detail" or rng.random() < DETAIL_SHARE:
            detail = take("detail", "all", DETAILS)
            slots |= self._detail_values(rng, person["locale"])
        extra = self.extra
        if detail is None and extra and kind in extra.kinds and s.split in extra.splits:
            # a draw of its own, so the rest is unchanged (its key is the one the screened arm in the README used)
            own = random.Random(content_hash("supply-id", self.seed, s.question, s.answers))
            if own.random() < extra.share:
                slots |= self._detail_values(own, person["locale"])
                detail = _seen_detail(extra.detail, members, heldout_used)
        if self.detail:  # a probe: the question as composed, its detail (if it drew one) replaced by this one
            if detail:
                members.pop(), heldout_used.pop()
            else:  # values from a draw of their own, so the rest of the question stays as composed
                own = random.Random(content_hash("probe", self.seed, s.question, s.answers))
                slots |= self._detail_values(own, person["locale"])
            detail = _seen_detail(self.detail, members, heldout_used)
        if detail:
            _, text, item = detail
            parts.append(text)
            items.append(item)
        if position == "before":
            parts.append(statement)
        parts.append(form)
        if position in ("start", "end"):
            parts.insert(0, statement) if position == "start" else parts.append(statement)
        register = take("register", "all", REGISTERS)
        template = " ".join(parts)
        if register.template:
            template = register.template(template, rng)
        question = cap(template.format(**slots))
        if register.text:
            question = register.text(question, rng)
        extra = {"members": members, "template": content_hash(template, *members, length=10),
                 "template_heldout": any(heldout_used), "register": register.name}
        return question, [cap(t.format(**slots)) for t in items], extra

    def inject_one(self, s: Seed) -> Question:
        """One Question from one seed; raises ValueError with the rejection reason."""
        meta = s.meta
        if meta.get("kind") not in KINDS or meta.get("property") not in FRAMES or not meta.get("hops"):
            raise ValueError("seed has no offline decomposition (meta kind/hops)")
        rng = random.Random(content_hash("inject", self.seed, s.question, s.answers))
        hops = meta["hops"]
        public = fold(" ".join([s.question, *s.answers, *(h["question"] + " " + h["fact"] for h in hops)]))
        person = self._person(rng, public)
        reason = "no composition"
        for _ in range(ATTEMPTS):
            question, items, extra = self.compose(s, person, rng)
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
                        "heldout", "heldout_reason", "side", "twin_of")
                return Question(
                    question=question, answers=list(s.answers), privacy_items=items, original_question=s.question,
                    source=s.source or "geo", split=s.split,
                    meta={**{k: meta[k] for k in keep if k in meta}, "hops": hops,
                          "subquestions": [h["question"] for h in hops],
                          "private_terms": sorted({person["name"], person["first"], person["last"]}),
                          **extra, "seed_id": s.id},
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


def inject(seeds: list[Seed], seed: int = 0, detail: str | None = None,
           extra: ExtraDetail | None = None) -> InjectResult:
    """Privacy-injected Questions for the given geography seeds, plus the rejected ones with reasons. `detail`: a
    probe, every question carries that sensitive detail (a kind of `DETAILS`' seen members, e.g. "id") where details
    go, the rest composed as without it; such questions are marked ``meta["probe"]``. `extra`: see ExtraDetail."""
    res = Injector(seed, detail, extra).inject(seeds)
    if detail:
        for q in res.questions:
            q.meta["probe"] = detail
    return res
