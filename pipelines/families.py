"""Slot families: the independent pieces every offline question is composed of, each member seen or held out.

A question is one frame (the life event that ties a person of the user's to a place) plus one question form, the
person (`who`), maybe a sensitive detail (`detail`), maybe a stated public fact (`statement`: self-contained and
other-fact questions), the place as a name or a description (`reference`: two-hop bridges and city appositions),
all of it written in one register (`register`). Each family's members are split into seen and held out: training
questions use seen members only; a validation or test question marked ``heldout_reason = <family>`` uses held-out
members of that one family (and seen members of every other), so a drop on it measures the family, not our
sentences. Member keys (``"frame:capital:3"``) are recorded per question in ``meta["members"]``; a unit test fails
when a held-out key reaches train.

Slots: {Who}/{who} (the person phrase, at a sentence start or inside one), {rel} {name} {first} {he} {him} {his}
{He} {His} {when}, {place} (a country's name or description), {city} and {link} (city appositions), {state} /
{State} (a stated fact), and the detail values.
"""

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

# ----------------------------------------------------------------------------------------------- who

KIN_SEEN = {
    "f": ("sister", "aunt", "cousin", "colleague", "neighbour", "friend", "niece", "grandmother", "flatmate",
          "manager", "daughter", "sister-in-law"),
    "m": ("brother", "uncle", "cousin", "colleague", "neighbour", "friend", "nephew", "grandfather", "flatmate",
          "manager", "son", "brother-in-law"),
}
KIN_HELDOUT = {
    "f": ("godmother", "stepdaughter", "landlady", "classmate", "fiancée", "mentor"),
    "m": ("godfather", "stepson", "landlord", "classmate", "fiancé", "mentor"),
}
# how the person is introduced: (at a sentence start, inside a sentence)
WHO_SEEN = (("My {rel} {name}", "my {rel} {name}"), ("My {rel}, {name},", "my {rel}, {name},"))
WHO_HELDOUT = (("{name}, my {rel},", "{name}, my {rel},"), ("{name}, who is my {rel},", "{name}, who is my {rel},"))

WHEN = ("next spring", "in March", "this autumn", "after the summer", "in two weeks", "next year", "in January",
        "at the end of the month")

# ----------------------------------------------------------------------------------------------- frames and forms


@dataclass(frozen=True)
class Frame:
    items: tuple[str, ...]  # the private facts it states, as labels about "the user"
    text: str  # the situation, in the question


def _f(items: list[str] | str, text: str) -> Frame:
    return Frame(tuple([items] if isinstance(items, str) else items), text)


# per property: (seen frames, held-out frames). Every item is stated in its text (a test checks the words).
FRAMES: dict[str, tuple[tuple[Frame, ...], tuple[Frame, ...]]] = {
    "capital": ((
        _f(["The user's {rel} {name} is moving {when} to {place}.",
            "The user will visit {first} in the capital of that country."],
           "{Who} is moving {when} to {place}, and I will visit {him} in that country's capital."),
        _f("The user's {rel} {name} works at an embassy in the capital of {place}.",
           "{Who} works at an embassy in the capital of {place}."),
        _f("The user's {rel} {name} is getting married {when} in the capital of {place}.",
           "{Who} is getting married {when} in the capital of {place}."),
        _f("The user's {rel} {name} studies at a university in the capital of {place}.",
           "{Who} studies at a university in the capital of {place}."),
        _f("The user's {rel} {name} is flying {when} to the capital of {place} for a conference.",
           "{Who} is flying {when} to the capital of {place} for a conference."),
    ), (
        _f("The user's {rel} {name} was born in the capital city of {place}.",
           "{Who} was born in the capital city of {place}."),
        _f("The user's {rel} {name} runs a small bakery in the capital of {place}.",
           "{Who} runs a small bakery in the capital of {place}."),
    )),
    "currency": ((
        _f(["The user's {rel} {name} is travelling {when} to {place}.",
            "{first} wants to change money into the local currency before leaving."],
           "{Who} is travelling {when} to {place} and wants to change money into the local currency first."),
        _f("The user's {rel} {name} works in {place} and is paid in the local currency.",
           "{Who} works in {place} and gets {his} salary in the local currency."),
        _f("Every month the user sends money to the user's {rel} {name} in {place}.",
           "Every month I send money to {who} in {place}, and it arrives in the local currency."),
        _f(["The user's {rel} {name} collects banknotes.", "{first} just got a banknote from {place}."],
           "{Who} collects banknotes and just got one from {place}, in its national currency."),
        _f("The user's {rel} {name} is buying a car in {place} and will pay in the local currency.",
           "{Who} is buying a car in {place} and will pay in the local currency."),
    ), (
        _f("The user's {rel} {name} is opening a shop {when} in {place}.",
           "{Who} is opening a shop {when} in {place} and will price everything in the local currency."),
        _f("The user's {rel} {name} sold a flat in {place} and was paid in the national currency.",
           "{Who} sold a flat in {place} and was paid in the national currency."),
    )),
    "continent": ((
        _f(["The user's {rel} {name} has accepted a job in {place}.", "{first} starts the new job {when}."],
           "{Who} has accepted a job in {place} and starts {when}."),
        _f("The user's {rel} {name} is going hiking {when} across {place}.",
           "{Who} is going hiking {when} across {place}."),
        _f("The user's {rel} {name} moved to {place} as a child.", "{Who} moved to {place} as a child."),
        _f("The user is planning a trip {when} to meet the family of the user's {rel} {name} in {place}.",
           "I'm planning a trip {when} to meet the family of {who} in {place}."),
        _f("The user's {rel} {name} is doing fieldwork in {place} {when}.",
           "{Who} is doing fieldwork in {place} {when}."),
    ), (
        _f("The user's {rel} {name} volunteers at a school in {place}.",
           "{Who} volunteers at a school in {place}."),
        _f("The user's {rel} {name} imports coffee grown in {place}.", "{Who} imports coffee grown in {place}."),
    )),
    "languages": ((
        _f("The user's {rel} {name} is moving to {place} {when} and wants to learn the local language.",
           "{Who} is moving to {place} {when} and wants to learn the local language first."),
        _f("The user's {rel} {name} works as a tour guide in {place} and speaks the local language.",
           "{Who} works as a tour guide in {place} and speaks the local language."),
        _f("The user's {rel} {name} writes to a pen pal in {place} in the pen pal's own language.",
           "{Who} writes to a pen pal in {place} in the pen pal's own language."),
        _f("The user's {rel} {name} watches films from {place} in their original language.",
           "{Who} watches films from {place} in their original language."),
        _f("The user's {rel} {name} is reading a novel from {place} in its original language.",
           "{Who} is reading a novel from {place} in its original language."),
    ), (
        _f("The user's {rel} {name} teaches at a school in {place} in the local language.",
           "{Who} teaches at a school in {place} in the local language."),
        _f("The user's {rel} {name} sings in a choir that performs songs from {place} in the local language.",
           "{Who} sings in a choir that performs songs from {place} in the local language."),
    )),
    "neighbours": ((
        _f("The user's {rel} {name} lives in {place} near the border.", "{Who} lives in {place} near the border."),
        _f("The user's {rel} {name} is driving {when} from {place} into a neighbouring country.",
           "{Who} is driving {when} from {place} into a neighbouring country."),
    ), (
        _f("The user's {rel} {name} commutes every day across the border of {place}.",
           "{Who} commutes every day across the border of {place}."),
        _f("The user's {rel} {name} is cycling {when} from {place} into the country next door.",
           "{Who} is cycling {when} from {place} into the country next door."),
    )),
    "population": ((
        _f("The user's {rel} {name} is writing a school report about {place}.",
           "{Who} is writing a school report about {place}."),
        _f("The user's {rel} {name} is planning a market study for {place} {when}.",
           "{Who} is planning a market study for {place} {when}."),
        _f("The user's {rel} {name} moved to {place} and finds it crowded.",
           "{Who} moved to {place} and finds it crowded."),
        _f("The user's {rel} {name} is designing a census survey for {place}.",
           "{Who} is designing a census survey for {place}."),
        _f("The user's {rel} {name} is preparing a talk about {place} {when}.",
           "{Who} is preparing a talk about {place} {when}."),
    ), (
        _f("The user's {rel} {name} is working on a project about the people of {place}.",
           "{Who} is working on a project about the people of {place}."),
        _f("The user's {rel} {name} is writing a travel guide to {place}.",
           "{Who} is writing a travel guide to {place}."),
    )),
    "country": ((
        _f("The user's {rel} {name} grew up in {city}, {link} {his} home country.",
           "{Who} grew up in {city}, {link} {his} home country."),
        _f("The user's {rel} {name} just landed in {city}, {link} the country {he} is visiting.",
           "{Who} just landed in {city}, {link} the country {he} is visiting."),
        _f("The user's {rel} {name} rents a flat in {city}, {link} the country where {he} lives.",
           "{Who} rents a flat in {city}, {link} the country {he} lives in."),
        _f("The user's {rel} {name} will run a marathon {when} in {city}.",
           "{Who} will run a marathon {when} in {city}, {link} a country {he} has never visited."),
        _f("The user's {rel} {name} got a job offer in {city}.",
           "{Who} got a job offer in {city}, {link} the country {he} may move to."),
    ), (
        _f("The user's {rel} {name} teaches music in {city}, {link} the country {he} moved to.",
           "{Who} teaches music in {city}, {link} the country {he} moved to."),
        _f(["The user's {rel} {name} sent the user a postcard from {city}.",
            "{first} is touring the country that {city} is in."],
           "{Who} sent me a postcard from {city}, {link} the country {he} is touring."),
    )),
}

# the question sentence per property: (seen, held out)
FORMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "capital": (("Which city is that?", "What is the name of that city?", "Which city do I mean?",
                 "Can you tell me which city that is?", "What city are we talking about?"),
                ("I'd like the name of that city.", "That city would be which one?")),
    "currency": (("Which currency is that?", "What currency would that be?", "What is that currency called?",
                  "Which currency do I mean?", "Can you tell me the name of that currency?"),
                 ("Name that currency for me.", "That money is called what?")),
    "continent": (("Which continent is that on?", "On what continent is that?", "Which continent would that be?",
                   "What continent are we talking about?", "Can you tell me the continent?"),
                  ("Tell me the continent, please.", "That is on which continent, then?")),
    "languages": (("Which language is that?", "What language would that be?", "What language is it?",
                   "Which language do I mean?", "Can you tell me which language that is?"),
                  ("Tell me which language that is.", "That language is called what?")),
    "neighbours": (("Which country could that be?", "Which neighbouring country is that?",
                    "What country lies across that border?"),
                   ("Name a country that fits.", "That would be which country next door?")),
    "population": (("How many people live there?", "What is the population there?",
                    "Roughly how many inhabitants is that?", "What is that country's population?",
                    "Can you tell me how many people live there?"),
                   ("Give me the number of people living there.", "The population there is what, roughly?")),
    "country": (("Which country is that?", "What country would that be?", "Which country do I mean?",
                 "What is the name of that country?", "Can you tell me which country that is?"),
                ("Tell me the country.", "That country is called what?")),
}

# underspecified questions: one private sentence naming the place; the last sentence (a Relation's `there`, or
# its `there_heldout`) only refers to it
INTROS: tuple[tuple[Frame, ...], tuple[Frame, ...]] = ((
    _f("The user's {rel} {name} lives in {place}.", "{Who} lives in {place}."),
    _f("The user's {rel} {name} is moving to {place} {when}.", "{Who} is moving to {place} {when}."),
    _f("The user will visit the user's {rel} {name} in {place} {when}.", "I will visit {who} in {place} {when}."),
    _f("The user's {rel} {name} is spending the summer in {place}.", "{Who} is spending the summer in {place}."),
    _f("The user's {rel} {name} bought a house in {place}.", "{Who} bought a house in {place}."),
), (
    _f("The user's {rel} {name} has just found a job in {place}.", "{Who} has just found a job in {place}."),
    _f("The user's {rel} {name} grew up in {place}.", "{Who} grew up in {place}."),
))

# ----------------------------------------------------------------------------------------------- statements

# a stated public fact ({state}/{State}: a Relation.state wording) and where it sits: "start" (before the frame),
# "before" (between the frame and the question form), "end" (after the question form)
STATEMENTS: tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = ((
    ("start", "I already know that {state}."), ("start", "{State}, as I learned at school."),
    ("start", "My guidebook says {state}."), ("start", "I looked it up: {state}."),
    ("before", "As far as I know, {state}."), ("before", "I remember that {state}."),
    ("end", "I'm fairly sure {state}."),
), (
    ("start", "According to the atlas on my shelf, {state}."), ("end", "By the way, {state}."),
    ("before", "{State}, if that helps."),
))

# ----------------------------------------------------------------------------------------------- sensitive details

ILLNESSES = ("diabetes", "asthma", "epilepsy", "depression", "a heart condition", "Crohn's disease", "migraines",
             "multiple sclerosis", "an eating disorder", "arthritis")
# (kind, text, item); values: {illness} {amount} {passport} {address} {phone} {iban}
DETAILS: tuple[tuple[tuple[str, str, str], ...], tuple[tuple[str, str, str], ...]] = ((
    ("health", "{He} is being treated for {illness}.", "The user's {rel} {name} is being treated for {illness}."),
    ("health", "{He} was recently diagnosed with {illness}.",
     "The user's {rel} {name} was recently diagnosed with {illness}."),
    ("money", "{He} still owes {amount} on a loan.", "The user's {rel} {name} owes {amount} on a loan."),
    ("money", "{His} salary is {amount} a year.", "The user's {rel} {name} earns {amount} a year."),
    ("id", "{His} passport number is {passport}.", "The passport number of the user's {rel} {name} is {passport}."),
), (
    ("address", "{He} lives at {address}.", "The user's {rel} {name} lives at {address}."),
    ("phone", "{His} phone number is {phone}.", "The phone number of the user's {rel} {name} is {phone}."),
    ("bank", "{His} bank account is {iban}.", "The bank account of the user's {rel} {name} is {iban}."),
))
DETAIL_SHARE = 0.5  # of the questions not held out on `detail` that carry a sensitive detail

# ----------------------------------------------------------------------------------------------- registers


def _typos(text: str, rng: random.Random) -> str:
    """Two or three swapped letters in longer plain words of the template (slots are left alone)."""
    parts = re.split(r"(\{[^}]*\})", text)
    spots = [(i, m.start()) for i, p in enumerate(parts) if not p.startswith("{")
             for m in re.finditer(r"\b[a-z]{6,}\b", p)]
    for i, at in sorted(rng.sample(spots, min(len(spots), rng.choice((2, 3)))), reverse=True):
        p, j = parts[i], at + rng.randrange(1, 4)
        parts[i] = p[:j] + p[j + 1] + p[j] + p[j + 2:]
    return "".join(parts)


def _chat(text: str, rng: random.Random) -> str:
    """All lowercase, a casual opener, contractions, and a loose ending."""
    body = re.sub(r"\bi am\b", "i'm", text.lower()).replace("do not", "don't").replace("what is", "what's")
    body = re.sub(r"\?$", rng.choice(("?", "??", "")), body.rstrip())
    return rng.choice(("hey, ", "ok so ", "quick q: ", "hi! ", "so ")) + body


@dataclass(frozen=True)
class Register:
    name: str
    template: Callable[[str, random.Random], str] | None = None  # applied before the slots are filled
    text: Callable[[str, random.Random], str] | None = None  # applied to the finished question


REGISTERS: tuple[tuple[Register, ...], tuple[Register, ...]] = (
    (Register("formal"), Register("formal"), Register("lowercase", text=lambda t, r: t.lower()),
     Register("typos", template=_typos)),
    (Register("chat", text=_chat),),
)

# ----------------------------------------------------------------------------------------------- the families

FAMILIES = ("who", "frame", "form", "register", "detail", "statement", "reference")


def families_for(kind: str, prop: str) -> tuple[str, ...]:
    """The families a question of this kind and property is composed of (what it can be held out on)."""
    out = ["who", "frame", "form", "register", "detail"]
    if kind in ("self_contained", "other_fact"):
        out.append("statement")
    if kind == "two_hop" or (prop == "country" and kind != "underspecified"):
        out.append("reference")
    return tuple(out)


@dataclass(frozen=True)
class Pick:
    """One member drawn from a family: its key (recorded in meta["members"]) and value."""
    key: str
    value: object
    heldout: bool


def pick(rng: random.Random, family: str, sub: str, members: tuple[tuple, tuple], heldout: bool) -> Pick:
    """A seen member, or a held-out one when `heldout`; the key names the family, its sub-table and the index
    (held-out members are numbered after the seen ones)."""
    seen, held = members
    pool = held if heldout else seen
    i = rng.randrange(len(pool))
    return Pick(f"{family}:{sub}:{i + (len(seen) if heldout else 0)}", pool[i], heldout)


def heldout_keys() -> set[str]:
    """Every held-out member key of every family (for tests and checks)."""
    from pipelines.relations import RELATIONS

    keys = set()

    def add(family: str, sub: str, members: tuple[tuple, tuple]) -> None:
        keys.update(f"{family}:{sub}:{len(members[0]) + i}" for i in range(len(members[1])))

    for sex in "fm":
        add("who", f"kin-{sex}", (KIN_SEEN[sex], KIN_HELDOUT[sex]))
    add("who", "phrase", (WHO_SEEN, WHO_HELDOUT))
    for prop in FRAMES:
        add("frame", prop, FRAMES[prop])
        add("form", prop, FORMS[prop])
    add("frame", "intro", INTROS)
    for name, r in RELATIONS.items():
        add("form", f"there-{name}", (r.there, r.there_heldout))
        if r.pivot:
            add("reference", f"pivot-{name}", (r.pivot, r.pivot_heldout))
        if r.link:
            add("reference", f"link-{name}", (r.link, r.link_heldout))
    add("statement", "all", STATEMENTS)
    add("detail", "all", DETAILS)
    add("register", "all", REGISTERS)
    return keys


# ------------------------------------------------------------------------------------------ the LLM injection path

# What an injecting LLM is told per register (the same families; the offline injector applies them itself)
REGISTER_TEXT = {"formal": "formal: complete sentences, normal capitalisation",
                 "lowercase": "lowercase: the same words, all in lowercase",
                 "typos": "with one or two misspelled common words (never a name or a place)",
                 "chat": "a casual chat message: an opener such as 'hey' or 'ok so', contractions, all lowercase"}
LLM_FAMILIES = ("who", "detail", "register")  # the families an injecting LLM is steered on


def llm_style(seed_id: str, split: str, heldout_reason: str | None, heldout_share: float) -> dict:
    """The slot members an injecting LLM is asked to use for one seed: the person of the user's, a sensitive detail
    kind (or none) and the register. Training seeds take seen members; a validation/test seed held out on one of
    these families (its own mark, or a `heldout_share` of the unmarked ones) takes that family's held-out members."""
    rng = random.Random(f"llm-style:{seed_id}")
    held = heldout_reason
    if held is None and split != "train" and rng.random() < heldout_share:
        held = rng.choice(LLM_FAMILIES)
    if split == "train":
        held = None
    sex = rng.choice("fm")
    picks = [pick(rng, "who", f"kin-{sex}", (KIN_SEEN[sex], KIN_HELDOUT[sex]), held == "who")]
    if held == "detail" or rng.random() < DETAIL_SHARE:
        picks.append(pick(rng, "detail", "all", DETAILS, held == "detail"))
    picks.append(pick(rng, "register", "all", REGISTERS, held == "register"))
    by = {p.key.split(":")[0]: p.value for p in picks}
    register = by["register"].name
    return {"who": by["who"], "detail": by["detail"][0] if "detail" in by else "none", "register": register,
            "register_text": REGISTER_TEXT[register], "members": [p.key for p in picks],
            "heldout_reason": held, "template_heldout": any(p.heldout for p in picks)}
