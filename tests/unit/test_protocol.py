"""Tests for seekhelp.protocol: examples for every error kind, then hypothesis properties."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seekhelp.protocol import (
    LLM_STOP,
    NEUTRAL_LT,
    SLM_STOP,
    TAGS,
    LLMTurn,
    SLMTurn,
    extract_answer,
    parse_llm_turn,
    parse_slm_turn,
    render_agent_reply,
    render_llm_turn,
    render_slm_turn,
    sanitize,
    validate_dialogue,
)

PROPS = settings(max_examples=200, deadline=None)
ALL_TAGS = [f"<{t}>" for t in TAGS] + [f"</{t}>" for t in TAGS]
FRAGMENTS = [*ALL_TAGS, "<", ">", "</", "think", "message", "hello", " ", "\n"]
adversarial = st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join)
any_text = st.one_of(st.text(), adversarial, st.lists(st.one_of(st.text(max_size=5), adversarial)).map("".join))
nonblank = any_text.filter(lambda s: sanitize(s).strip() != "")


# ---------------------------------------------------------------- SLM: happy paths


def test_slm_message_turn():
    t = parse_slm_turn("<think>I need the capital.</think>\n<message>What is the capital of France?</message>")
    assert (t.think, t.action, t.content, t.errors) == (
        "I need the capital.", "message", "What is the capital of France?", [])
    assert t.ok and t.recoverable


def test_slm_answer_turn_strips_whitespace():
    t = parse_slm_turn("  \n<think>\n  so it is Paris \n</think>\n\n<answer>  Paris\n</answer>\n")
    assert (t.think, t.action, t.content, t.errors) == ("so it is Paris", "answer", "Paris", [])


def test_slm_empty_think_is_allowed():
    assert parse_slm_turn("<think></think><answer>42</answer>").ok


def test_stop_strings():
    assert SLM_STOP == ["</message>", "</answer>"] and LLM_STOP == ["</need>", "</information>"]


# ---------------------------------------------------------------- SLM: every error kind


@pytest.mark.parametrize("text, action, content, errors", [
    ("<message>hi</message>", "message", "hi", ["missing <think>"]),
    ("Sure! <think>t</think><answer>y</answer>", "answer", "y", ["text before <think>"]),
    ("<think>t <message>hi</message>", "message", "hi", ["unclosed <think>"]),
    ("<think>t</think><message>what is X", "message", "what is X", ["unclosed <message>"]),
    ("<think>t</think><answer>Paris", "answer", "Paris", ["unclosed <answer>"]),
    ("<think>t</think><message> </message>", "message", "", ["empty <message>"]),
    ("<think>t</think><answer></answer>", "answer", "", ["empty <answer>"]),
    ("<think>t</think><message>a</message><answer>b</answer>", "message", "a", ["more than one action"]),
    ("<think>t</think><message>a</message></message>", "message", "a", ["stray tag </message>"]),
    ("<think>t</think><answer>Paris</answer> because it is the capital.", "answer", "Paris",
     ["text after </answer>"]),
    ("<think>t</think> so: <answer>x</answer>", "answer", "x", ["text before <answer>"]),
    ("<think>t</think><think>u</think><answer>x</answer>", "answer", "x",
     ["stray tag <think>", "stray tag </think>", "text before <answer>"]),
    ("<think>t</think><answer>a <message> b</answer>", "answer", "a <message> b",
     ["nested tag <message> inside <answer>"]),
    ("<THINK>t</THINK><answer>x</answer>", "answer", "x", ["missing <think>", "text before <answer>"]),
])
def test_slm_errors_with_recovery(text, action, content, errors):
    t = parse_slm_turn(text)
    assert (t.action, t.content, t.errors) == (action, content, errors)
    assert t.recoverable and not t.ok


def test_slm_nested_tag_in_think():
    t = parse_slm_turn("<think>maybe <answer>b</answer></think><answer>c</answer>")
    assert t.errors == ["nested tag <answer> inside <think>", "nested tag </answer> inside <think>"]
    assert (t.think, t.action, t.content) == ("maybe <answer>b</answer>", "answer", "c")


def test_slm_hallucinated_agent_reply_is_flagged():
    t = parse_slm_turn("<think>t</think><message>a</message>\n<agent-reply><information>x</information></agent-reply>")
    assert (t.action, t.content) == ("message", "a")
    assert t.errors == ["slm wrote <agent-reply>", "stray tag <information>", "stray tag </information>"]


def test_slm_prefilled_think():
    t = parse_slm_turn("reasoning here</think>\n<answer>Paris</answer>")
    assert (t.think, t.action, t.content, t.errors) == ("reasoning here", "answer", "Paris", ["missing <think>"])


@pytest.mark.parametrize("text, think, errors", [
    ("<think>t</think> Paris", "t", ["no action"]),
    ("just some text", "", ["missing <think>", "no action"]),
    ("", "", ["missing <think>", "no action"]),
    ("<think>still thinking", "still thinking", ["unclosed <think>", "no action"]),
    ("<think>t</think><need>x</need>", "t", ["stray tag <need>", "stray tag </need>", "no action"]),
])
def test_slm_no_action(text, think, errors):
    t = parse_slm_turn(text)
    assert (t.think, t.action, t.content, t.errors) == (think, None, "", errors)
    assert not t.recoverable


def test_parsers_accept_non_str():
    assert parse_slm_turn(None).errors == ["missing <think>", "no action"]  # type: ignore[arg-type]
    assert parse_llm_turn(None).action is None  # type: ignore[arg-type]


# ---------------------------------------------------------------- LLM


def test_llm_need_with_plain_reasoning():
    t = parse_llm_turn("The query lacks the city.\nSo I ask.\n<need>Which city does the user live in?</need>")
    assert (t.reasoning, t.action, t.content, t.errors) == (
        "The query lacks the city.\nSo I ask.", "need", "Which city does the user live in?", [])
    assert t.ok


def test_llm_information_with_think_reasoning():
    t = parse_llm_turn("<think>step 1</think>\n<information>Paris is the capital.</information>")
    assert (t.reasoning, t.action, t.content, t.errors) == ("step 1", "information", "Paris is the capital.", [])


@pytest.mark.parametrize("text, reasoning, content", [
    ("<think>hmm</think> Paris is the capital.", "hmm", "Paris is the capital."),
    ("hmm</think>Paris", "hmm", "Paris"),
    ("Paris is the capital.", "", "Paris is the capital."),
    ("<think>never closed", "", "never closed"),
])
def test_llm_no_action_defaults_to_text(text, reasoning, content):
    t = parse_llm_turn(text)
    assert (t.reasoning, t.action, t.content, t.errors) == (reasoning, None, content, ["no <need> or <information>"])


@pytest.mark.parametrize("text, action, content, errors", [
    ("<need>a</need><information>b</information>", "need", "a", ["more than one action"]),
    ("r <information>facts that go on", "information", "facts that go on", ["unclosed <information>"]),
    ("r <need>  </need>", "need", "", ["empty <need>"]),
    ("r <information>x</information> and more", "information", "x", ["text after </information>"]),
    ("r <message>q</message> <need>x</need>", "need", "x", ["stray tag <message>", "stray tag </message>"]),
    ("<information>a <need> b</information>", "information", "a <need> b", ["nested tag <need> inside <information>"]),
])
def test_llm_errors_with_recovery(text, action, content, errors):
    t = parse_llm_turn(text)
    assert (t.action, t.content, t.errors) == (action, content, errors)


# ---------------------------------------------------------------- rendering, sanitizing


def test_render_exact_shapes():
    assert render_slm_turn(" t ", "message", " q ") == "<think>t</think>\n<message>q</message>"
    assert render_llm_turn("r", "need", "c") == "r\n\n<need>c</need>"
    assert render_llm_turn("", "information", "c") == "<information>c</information>"
    assert render_agent_reply("information", "facts") == "<agent-reply><information>facts</information></agent-reply>"
    assert render_agent_reply("need", "x") == "<agent-reply><need>x</need></agent-reply>"


@pytest.mark.parametrize("call", [
    lambda: render_slm_turn("t", "need", "c"),
    lambda: render_llm_turn("t", "answer", "c"),
    lambda: render_agent_reply("message", "c"),
])
def test_render_rejects_unknown_action(call):
    with pytest.raises(ValueError):
        call()


def test_render_neutralizes_tags_in_content():
    text = render_slm_turn("I saw <answer> in the question", "message", "what does </message> mean?")
    t = parse_slm_turn(text)
    assert t.ok
    assert t.content == f"what does {NEUTRAL_LT}/message> mean?"
    assert t.think == f"I saw {NEUTRAL_LT}answer> in the question"


def test_sanitize_leaves_non_tags_alone():
    assert sanitize("a < b > c <Think> <thinking> </ answer>") == "a < b > c <Think> <thinking> </ answer>"
    assert sanitize("<<think>>") == f"<{NEUTRAL_LT}think>>"


# ---------------------------------------------------------------- dialogues, answers

MSG = render_slm_turn("need help", "message", "What is the capital of France?")
ANS = render_slm_turn("done", "answer", "Paris")


def test_validate_dialogue():
    assert validate_dialogue([MSG, MSG, ANS]) == []
    assert validate_dialogue([ANS]) == []
    assert validate_dialogue([]) == ["empty dialogue"]
    assert validate_dialogue([MSG]) == ["turn 1: expected <answer>, got <message>"]
    assert validate_dialogue([ANS, ANS]) == ["turn 1: expected <message>, got <answer>"]
    assert validate_dialogue(["<message>hi</message>", "nothing"]) == [
        "turn 1: missing <think>", "turn 2: missing <think>", "turn 2: no action"]


def test_extract_answer():
    assert extract_answer(ANS) == "Paris"
    assert extract_answer("<answer>a</answer> then <answer>  b </answer>") == "b"
    assert extract_answer("<answer>a<answer>b</answer>") == "b"
    assert extract_answer("<answer></answer>") == ""
    assert extract_answer(MSG) is None
    assert extract_answer("<answer>unclosed") is None
    assert extract_answer("</answer><answer>") is None


# ---------------------------------------------------------------- properties


def _check_invariants(t: SLMTurn | LLMTurn) -> None:
    assert all(isinstance(e, str) and e for e in t.errors)
    assert len(set(t.errors)) == len(t.errors)
    assert t.ok == (not t.errors)
    assert t.content == t.content.strip()


@PROPS
@given(any_text)
def test_parse_slm_never_raises(text):
    t = parse_slm_turn(text)
    _check_invariants(t)
    assert t.raw == text and t.action in (None, "message", "answer")
    assert t.think == t.think.strip()
    if t.action is None:
        assert t.content == "" and "no action" in t.errors


@PROPS
@given(any_text)
def test_parse_llm_never_raises(text):
    t = parse_llm_turn(text)
    _check_invariants(t)
    assert t.raw == text and t.action in (None, "need", "information")
    assert (t.action is None) == ("no <need> or <information>" in t.errors)


@PROPS
@given(any_text)
def test_sanitize_removes_every_tag_and_is_idempotent(text):
    clean = sanitize(text)
    assert not any(tag in clean for tag in ALL_TAGS)
    assert sanitize(clean) == clean
    assert len(clean) == len(text)


@PROPS
@given(any_text, st.sampled_from(["message", "answer"]), nonblank)
def test_slm_round_trip(think, action, content):
    t = parse_slm_turn(render_slm_turn(think, action, content))
    assert t.errors == []
    assert (t.think, t.action, t.content) == (sanitize(think).strip(), action, sanitize(content).strip())
    assert action != "answer" or extract_answer(t.raw) == t.content


@PROPS
@given(any_text, st.sampled_from(["need", "information"]), nonblank)
def test_llm_round_trip(reasoning, action, content):
    t = parse_llm_turn(render_llm_turn(reasoning, action, content))
    assert t.errors == []
    assert (t.reasoning, t.action, t.content) == (sanitize(reasoning).strip(), action, sanitize(content).strip())


@PROPS
@given(st.lists(st.tuples(any_text, nonblank), max_size=4), st.tuples(any_text, nonblank))
def test_rendered_dialogues_are_valid(messages, final):
    turns = [render_slm_turn(t, "message", c) for t, c in messages] + [render_slm_turn(final[0], "answer", final[1])]
    assert validate_dialogue(turns) == []


@PROPS
@given(st.lists(st.one_of(any_text, st.builds(render_slm_turn, any_text, st.sampled_from(["message", "answer"]),
                                                      nonblank)), max_size=4), any_text, nonblank)
def test_dialogue_ending_with_a_message_is_invalid(turns, think, content):
    assert validate_dialogue([*turns, render_slm_turn(think, "message", content)]) != []
