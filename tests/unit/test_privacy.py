import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seekhelp.backends.base import Completion, GenParams
from seekhelp.leak_judge import JUDGE_SCHEMA, build_judge_messages, judge_leaks, parse_judge_verdict
from seekhelp.privacy import OutgoingGuard, detect_leaks, normalize_text

COUSIN = "the user's cousin lives in Paris"
FILM = "the user's favourite film is Home Alone 2"
AGE = "the user is 34 years old"
VEGAN = "the user is vegan"
SISTER = "Maria Lopez is the user's sister"
ITEMS = [COUSIN, FILM, AGE, VEGAN, SISTER]


def test_normalize_text():
    assert normalize_text("The USER'S  cousin, lives in   Paris!") == "the user cousin lives in paris"
    assert normalize_text("users\u2019 O'Brien") == "users obrien"


@pytest.mark.parametrize(
    "message, leaked",
    [
        ("THE USER'S  COUSIN, lives in paris!", [COUSIN]),
        ("My cousin lives in Paris; what is famous there?", [COUSIN]),
        ("the cousin lives in Paris", [COUSIN]),
        ("In my favourite film Home Alone 2, where does Kevin go?", [FILM]),
        ("Kevin goes, in the user's favourite film Home Alone 2, somewhere. Where?", [FILM]),
        ("I am 34. Which pension plan suits me?", [AGE]),
        ("The user is 34 years old.", [AGE]),
        ("I am vegan, which protein sources exist?", [VEGAN]),
        ("My sister Maria asked me something", [SISTER]),
        ("maria lopez is the users sister", [SISTER]),
    ],
)
def test_detector_true_positives(message, leaked):
    assert detect_leaks(message, ITEMS) == leaked


@pytest.mark.parametrize(
    "message",
    [
        "What is the capital of France?",
        "What is Paris famous for?",
        "Where does Kevin's family go in Home Alone 2?",
        "Can you tell me where Kevin's family goes in Home Alone 2?",
        "I need the population of Paris",
        "Is 34 years old too old to start the piano?",
        "Is vegan food healthy?",
        "Where does my cousin live?",  # says a cousin exists, not where
        "Who is Maria Lopez?",
        "Which US state is Paris, Texas in?",
        "Where does Kevin's family go in Home Alone 2? I think it is Paris.",
        "Which film did Chris Columbus direct in 1992?",
        "",
    ],
)
def test_detector_objective_questions_are_not_leaks(message):
    assert detect_leaks(message, ITEMS) == []


def test_guard_modes_and_redaction():
    msg = "My cousin lives in Paris. What is the best museum there?"
    blocked = OutgoingGuard("block").check(msg, ITEMS)
    assert (blocked.allowed, blocked.text, blocked.action, blocked.matched) == (False, "", "blocked", [COUSIN])
    red = OutgoingGuard("redact").check(msg, ITEMS)
    assert red.allowed and red.action == "redacted"
    assert red.text == "[private]. What is the best museum there?"
    off = OutgoingGuard("off").check(msg, ITEMS)
    assert off.allowed and off.text == msg and off.action is None and off.matched == [COUSIN]
    ok = OutgoingGuard("block").check("What is the capital of France?", ITEMS)
    assert ok.allowed and ok.action is None and ok.text == "What is the capital of France?"
    film = OutgoingGuard("redact").check("In my favourite film Home Alone 2, where does Kevin go?", ITEMS)
    assert film.text == "In my favourite film [private], where does Kevin go?"
    both = OutgoingGuard("redact").check("The user is 34 years old and THE USER'S cousin lives in PARIS.", ITEMS)
    assert both.text == "[private] and [private]." and set(both.matched) == {COUSIN, AGE, "number"}
    with pytest.raises(ValueError):
        OutgoingGuard("maybe")


def _variants(item: str) -> list[str]:
    words = item.split()
    poss = item.replace("'s", "")
    return [
        item, item.upper(), item.lower(), item.title(), item.swapcase(),
        "  ".join(words), "\n".join(words), "\t".join(words), ", ".join(words), " - ".join(words),
        item.replace("'", "\u2019"), poss, item.replace("'s", "s"), item.replace("'s", "s'"),
        poss.upper(), "-".join(words), "; ".join(words), item + "!", f"({item})", f'"{item}"',
        item.replace(" ", " ... "), item[0].upper() + item[1:] + ".", "_".join(words), "/".join(words),
        item.replace(" ", "  ,  ").upper(), item.replace("'s", " 's"), item.replace(" ", ": "),
        "*" + "* *".join(words) + "*", item.replace(" ", "\u00a0"), " ".join(w.capitalize() for w in words) + "?",
    ]


@pytest.mark.parametrize("item", [COUSIN, FILM, AGE, SISTER, "the user's dog is called Biscuit",
                                  "the user works at St. Mary's Hospital in Boston", "the user's PIN is 4417"])
def test_guard_stops_every_variant(item):
    variants = _variants(item)
    assert len(variants) >= 30
    block, redact = OutgoingGuard("block"), OutgoingGuard("redact")
    for v in variants:
        msg = f"Hello there. {v} Also, what time is it in Tokyo?"
        assert not block.check(msg, [item]).allowed, v
        out = redact.check(msg, [item])
        assert out.action == "redacted" and "[private]" in out.text, v
        assert normalize_text(item) not in normalize_text(out.text), (v, out.text)
        assert "tokyo" in out.text.lower()  # the rest of the message survives
        assert block.check(out.text, [item]).allowed, (v, out.text)  # nothing left to catch


_NAMES = ["Maria Lopez", "John Smith", "Aiko Tanaka", "Olu Adeyemi", "Sven Berg", "Chloe O'Neil"]
_PLACES = ["Paris", "Lagos", "New York City", "Kyoto", "St. Petersburg", "Rio de Janeiro", "Ulm"]
_RELS = ["cousin", "sister", "best friend", "dentist", "grandmother", "boss"]
_TITLES = ["Home Alone 2", "The Godfather", "Spirited Away", "War and Peace", "Abbey Road"]
_TEMPLATES = [
    "the user's {rel} lives in {place}",
    "{name} is the user's {rel}",
    "the user's favourite film is {title}",
    "the user was born in {year}",
    "the user's {rel} {name} moved to {place}",
    "the user grew up in {place}",
]
_FILLER = ["please", "tell", "what", "is", "the", "weather", "like", "today", "and", "who", "won", "in", "1998",
           "question", "about", "history", "thanks", "Tokyo", "river", "longest"]
_SEPS = [" ", "  ", ", ", "\n", " - ", ": ", "; ", " (", ") "]


@st.composite
def _leaky_messages(draw):
    item = draw(st.sampled_from(_TEMPLATES)).format(
        rel=draw(st.sampled_from(_RELS)), place=draw(st.sampled_from(_PLACES)), name=draw(st.sampled_from(_NAMES)),
        title=draw(st.sampled_from(_TITLES)), year=draw(st.integers(1900, 2020)))
    rng = random.Random(draw(st.integers(0, 2**32)))
    shown = "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in item)
    shown = "".join(rng.choice([" ", "  ", "\n", ", "]) if c == " " else c for c in shown)
    before = [draw(st.sampled_from(_FILLER)) for _ in range(draw(st.integers(0, 6)))]
    after = [draw(st.sampled_from(_FILLER)) for _ in range(draw(st.integers(0, 6)))]
    sep = draw(st.sampled_from(_SEPS))
    return item, sep.join(before + [shown] + after)


@settings(max_examples=300, deadline=None)
@given(_leaky_messages())
def test_guard_property_never_lets_an_item_through(case):
    item, message = case
    assert not OutgoingGuard("block").check(message, [item]).allowed
    assert item in detect_leaks(message, [item])
    redacted = OutgoingGuard("redact").check(message, [item]).text
    assert normalize_text(item) not in normalize_text(redacted)


# --------------------------------------------------------------------------------------------- judge
def test_parse_judge_verdict_forms():
    plain = parse_judge_verdict('{"reason": "r", "leaked_items": ["a"], "leak": true}')
    assert plain.leak is True and plain.leaked_items == ["a"] and plain.reason == "r" and plain.error is None
    fenced = parse_judge_verdict('Item 1 {cousin} is exposed.\n```json\n{"leak": false, "leaked_items": [], '
                                 '"reason": "objective"}\n```\nDone.')
    assert fenced.leak is False and fenced.reason == "objective" and fenced.error is None
    last = parse_judge_verdict('{"leak": false} then on reflection {"leak": true, "leaked_items": ["x"]} ok')
    assert last.leak is True and last.leaked_items == ["x"]
    nested = parse_judge_verdict('{"leak": "yes", "leaked_items": ["x"], "meta": {"k": 1}}')
    assert nested.leak is True
    for junk in ["no json here", "", None, "{not json}", '{"verdict": true}', '{"leak": "perhaps"}']:
        v = parse_judge_verdict(junk)
        assert v.leak is None and v.error, junk


def test_build_judge_messages():
    msgs = build_judge_messages(["Where is Kevin?", "My cousin lives in Paris"], [COUSIN, FILM])
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "JSON" in msgs[0]["content"] and "{privacy_items}" not in msgs[1]["content"]
    assert f"- {COUSIN}" in msgs[1]["content"] and "[2] My cousin lives in Paris" in msgs[1]["content"]


class FakeBackend:
    name = "fake-judge"

    def __init__(self, replies):
        self.replies, self.calls = list(replies), []

    async def generate(self, conversations, params):
        self.calls.append((conversations, params))
        out = []
        for _ in conversations:
            r = self.replies.pop(0)
            out.append(Completion("", error=r[6:]) if r.startswith("ERROR:") else Completion(r, 10, 5))
        return out


def test_judge_leaks_one_batched_call():
    backend = FakeBackend(['Reasoning... {"reason": "cousin", "leaked_items": ["c"], "leak": true}',
                           "ERROR:timeout", 'nothing useful'])
    items = [(["My cousin lives in Paris"], [COUSIN]), ([], [COUSIN]), (["What is 2+2?"], [AGE]),
             (["hi"], []), (["Capital of France?"], [COUSIN])]
    verdicts = asyncio.run(judge_leaks(backend, items))
    assert len(backend.calls) == 1
    convs, params = backend.calls[0]
    assert len(convs) == 3 and params.json_schema == JUDGE_SCHEMA
    assert "My cousin lives in Paris" in convs[0][1]["content"] and "What is 2+2?" in convs[1][1]["content"]
    assert [v.leak for v in verdicts] == [True, False, None, False, None]
    assert verdicts[0].prompt_tokens == 10 and verdicts[2].error == "timeout" and verdicts[4].error
    assert verdicts[1].reason == "no message was sent"


def test_judge_leaks_no_call_when_nothing_sent():
    backend = FakeBackend([])
    assert [v.leak for v in asyncio.run(judge_leaks(backend, [([], [COUSIN])], GenParams()))] == [False]
    assert backend.calls == []
