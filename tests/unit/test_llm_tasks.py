"""LLM privacy injection and the LLM judge as distilabel pipelines, against a scripted OpenAI-compatible server.

The server answers instantly over real HTTP; the reply depends on the step (read from the system prompt) and on the
seed (read from the answer written in the user message). Each pipeline run costs a few seconds (distilabel starts
one process per step), so the tests share runs through module fixtures.
"""

import json
import logging
import re
import warnings

import pytest

from pipelines.llm_injection import run_llm_injection, run_llm_judge
from pipelines.llm_tasks import (
    ANSWER_CHANGED,
    ANSWER_IN_QUESTION,
    CHECK_SCHEMA,
    NO_GENERATION,
    SKIPPED,
    ConsistencyCheck,
    RestateWithFacts,
    compose_question,
    make_llm,
    read_json_reply,
)
from pipelines.seeds import Seed
from seekhelp.backends.scripted_server import Faults, ScriptedServer
from seekhelp.records import Question

STEP_MARKERS = {"step 1 of 3": "facts", "step 2 of 3": "restate", "step 3 of 3": "ask",
                "You review rewritten": "check", "You audit what a small": "judge"}


def step_of(messages: list[dict]) -> str:
    system = messages[0]["content"]
    return next(name for marker, name in STEP_MARKERS.items() if marker in system)


def answer_of(messages: list[dict]) -> str:
    return re.search(r"[Aa]nswer: ([^\s(]+)", messages[-1]["content"]).group(1)


def good_reply(step: str, answer: str) -> str:
    """Well-formed replies, wrapped the way chatty models wrap them (prose, code fences)."""
    if step == "facts":
        facts = [f"The user's cousin Mira lives in {answer}.", "The user's favourite atlas is a gift from Mira."]
        return "Sure, here you go:\n```json\n" + json.dumps({"privacy_items": facts}) + "\n```"
    if step == "restate":
        return json.dumps({"restated": f"The capital of the country {answer[:3]}ia is where the user's cousin "
                                       "Mira lives."})
    if step == "ask":
        return json.dumps({"question": "In which city does the user's cousin Mira live?"})
    if step == "check":
        return 'Looks fine. {"reason": "The cousin lives in that capital.", "same_answer": true, ' \
               '"answer_in_question": false}'
    return 'Reasoning... {"reason": "The request names the cousin.", "leaked_items": ["p1"], "leak": true}'


def mixed_reply(messages: list[dict]) -> str:
    step, answer = step_of(messages), answer_of(messages)
    if answer == "Garbo" and step == "facts":
        return "I am not sure what you want. Facts: none!"
    if answer == "Leakton" and step == "ask":
        return json.dumps({"question": "Is it Leakton, where the user's cousin Mira lives?"})
    if answer == "Shifton" and step == "check":
        return json.dumps({"reason": "It now asks for the country.", "same_answer": False,
                           "answer_in_question": False})
    if answer == "Badcheck" and step == "check":
        return '{"reason": "ok", "same_answer": "maybe", "answer_in_question": false}'
    return good_reply(step, answer)


def seed(answer: str, i: int = 0) -> Seed:
    return Seed(f"What is the capital of country number {i}?", [answer, f"{answer} City"], "geo", "train",
                {"entities": [f"C{i}"], "kind": "capital"})


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    seeds = [seed(a, i) for i, a in enumerate(["Alphaville", "Betaburg", "Gammaton"])]
    cache = tmp_path_factory.mktemp("distilabel-cache")
    root = logging.getLogger()
    before = (root.handlers[:], root.level)
    with ScriptedServer(lambda m: good_reply(step_of(m), answer_of(m))) as srv:
        accepted, rejected = run_llm_injection(seeds, srv.base_url, "scripted-llm", batch_size=2, cache_dir=cache)
    return seeds, accepted, rejected, srv, cache, before, (root.handlers[:], root.level)


def test_good_replies_give_one_question_per_seed(good_run):
    seeds, accepted, rejected, srv, *_ = good_run
    assert not rejected and len(accepted) == 3
    for q, s in zip(accepted, seeds, strict=True):
        assert isinstance(q, Question)
        assert q.answers == s.answers and q.original_question == s.question
        assert q.source == s.source and q.split == s.split
        assert q.meta["injector"] == "llm" and q.meta["seed_id"] == s.id and q.meta["entities"] == s.meta["entities"]
        assert q.privacy_items == [f"The user's cousin Mira lives in {s.answers[0]}.",
                                   "The user's favourite atlas is a gift from Mira."]
        assert q.question.startswith(q.meta["restated"]) and q.question.endswith("Mira live?")
        assert "easy_hint" not in q.meta  # easy is measured per SLM, never guessed from the labels
        assert q.meta["inject_tokens"]["prompt"] > 0 and q.meta["inject_tokens"]["completion"] > 0
        assert q.id == Question(q.question, q.answers).id
    assert len(srv.requests) == 12  # 3 seeds x 4 steps


def test_requests_carry_model_schema_and_settings(good_run):
    srv = good_run[3]
    body = srv.requests[0]
    assert body["model"] == "scripted-llm" and body["max_tokens"] == 256
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["type"] == "object"
    temps = {step_of(b["messages"]): b["temperature"] for b in srv.requests}
    assert temps["facts"] == 0.7 and temps["check"] == 0.0


def test_run_stays_in_its_folder_and_restores_logging(good_run):
    *_, cache, before, after = good_run
    assert list(cache.glob("*/distilabel/**/pipeline.yaml")) and list(cache.glob("*/hf-datasets"))
    assert before == after


@pytest.fixture(scope="module")
def mixed_run():
    answers = ["Okayburg", "Garbo", "Leakton", "Shifton", "Badcheck"]
    seeds = [seed(a, i) for i, a in enumerate(answers)]
    with ScriptedServer(mixed_reply) as srv:
        accepted, rejected = run_llm_injection(seeds, srv.base_url, "scripted-llm", batch_size=3)
    return seeds, accepted, rejected, srv


def test_bad_rows_are_rejected_with_a_reason_never_dropped(mixed_run):
    seeds, accepted, rejected, _ = mixed_run
    assert len(accepted) + len(rejected) == len(seeds)
    assert [q.answers[0] for q in accepted] == ["Okayburg"]
    reasons = {r["seed"]["answers"][0]: r["reason"] for r in rejected}
    assert reasons["Garbo"].startswith("facts: no JSON object")
    assert reasons["Leakton"].startswith(ANSWER_IN_QUESTION)
    assert reasons["Shifton"].startswith(ANSWER_CHANGED)
    assert reasons["Badcheck"] == "check: 'same_answer' must be true or false"


def test_rejected_rows_keep_their_intermediate_outputs(mixed_run):
    seeds, _, rejected, _ = mixed_run
    by = {r["seed"]["answers"][0]: r for r in rejected}
    garbo = by["Garbo"]
    assert garbo["seed_id"] == seeds[1].id and garbo["seed_question"] == seeds[1].question
    assert garbo["privacy_items"] is None and garbo["raw"]["facts"].startswith("I am not sure")
    leak = by["Leakton"]
    assert leak["question"].endswith("Is it Leakton, where the user's cousin Mira lives?")
    assert leak["privacy_items"] and leak["restated"] and leak["check_ok"] is False


def test_no_call_after_a_failed_step_or_a_deterministic_rejection(mixed_run):
    srv = mixed_run[3]
    calls = [(step_of(b["messages"]), answer_of(b["messages"])) for b in srv.requests]
    assert [s for s, a in calls if a == "Garbo"] == ["facts"]
    assert [s for s, a in calls if a == "Leakton"] == ["facts", "restate", "ask"]
    assert len(calls) == 1 + 3 + 4 * 3


def test_failed_calls_become_no_generation_rows():
    seeds = [seed("Alphaville", 0), seed("Betaburg", 1)]
    with ScriptedServer(faults=Faults(server_error=1.0)) as srv:
        accepted, rejected = run_llm_injection(seeds, srv.base_url, "scripted-llm", max_retries=0)
        verdicts = run_llm_judge([{"trajectory_id": "t", "messages_sent": ["m"], "privacy_items": ["p"]}],
                                 srv.base_url, "scripted-llm", max_retries=0)
    assert not accepted and [r["reason"] for r in rejected] == [f"facts: {NO_GENERATION}"] * 2
    assert verdicts == [{"trajectory_id": "t", "leak": None, "leaked_items": [], "reason": "",
                         "error": NO_GENERATION, "prompt_tokens": 0, "completion_tokens": 0}]


def test_judge_parses_verdicts_and_skips_empty_rows():
    def reply(messages):
        user = messages[-1]["content"]
        if "harmless" in user:
            return 'Nothing private. {"reason": "objective question", "leaked_items": [], "leak": false}'
        if "gibberish" in user:
            return "no verdict here"
        return good_reply("judge", "")

    items = [{"trajectory_id": "leaky", "messages_sent": ["My cousin Mira lives in Lima?"], "privacy_items": ["p1"]},
             {"trajectory_id": "empty", "messages_sent": [], "privacy_items": ["p1"]},
             {"trajectory_id": "blank", "messages_sent": ["  "], "privacy_items": ["p1"]},
             {"trajectory_id": "noitems", "messages_sent": ["hello"], "privacy_items": []},
             {"trajectory_id": "clean", "messages_sent": ["a harmless question"], "privacy_items": ["p1"]},
             {"trajectory_id": "bad", "messages_sent": ["gibberish"], "privacy_items": ["p1"]}]
    with ScriptedServer(reply) as srv:
        out = run_llm_judge(items, srv.base_url, "judge-llm")
    assert [o["trajectory_id"] for o in out] == [i["trajectory_id"] for i in items]
    by = {o["trajectory_id"]: o for o in out}
    assert by["leaky"]["leak"] is True and by["leaky"]["leaked_items"] == ["p1"] and by["leaky"]["error"] is None
    assert by["empty"]["leak"] is False and by["blank"]["leak"] is False and by["noitems"]["leak"] is False
    assert by["clean"]["leak"] is False and by["clean"]["reason"] == "objective question"
    assert by["bad"]["leak"] is None and "no JSON verdict" in by["bad"]["error"]
    assert len(srv.requests) == 3 and srv.requests[0]["response_format"]["type"] == "json_schema"


def test_nothing_to_do_starts_no_pipeline():
    assert run_llm_injection([], "http://127.0.0.1:9/v1", "m") == ([], [])
    out = run_llm_judge([{"trajectory_id": "x", "messages_sent": [], "privacy_items": ["p"]}], "http://127.0.0.1:9/v1",
                        "m")
    assert out[0]["leak"] is False and out[0]["reason"] == "no message was sent"


# ------------------------------------------------------------------------------------------ pure helpers
def test_read_json_reply_validates_keys_and_types():
    fields = {"privacy_items": list}
    assert read_json_reply(None, fields) == (None, NO_GENERATION)
    assert read_json_reply('```json\n{"privacy_items": [" a  b ", "c", "c"]}\n``` done', fields) == (
        {"privacy_items": ["a b", "c"]}, None)
    assert read_json_reply('{"privacy_items": []}', fields)[1].startswith("'privacy_items' must be")
    assert read_json_reply('{"privacy_items": "one"}', fields)[1].startswith("'privacy_items' must be")
    assert read_json_reply('{"other": 1}', fields)[1].startswith("no JSON object")
    assert read_json_reply('{"privacy_items": ["x"]', fields)[1].startswith("no JSON object")
    check = {"reason": str, "same_answer": bool}
    assert read_json_reply('{"reason": "r", "same_answer": "true"}', check) == ({"reason": "r", "same_answer": True},
                                                                                None)
    assert read_json_reply('{"reason": "", "same_answer": true}', check)[1] == "'reason' must be a non-empty string"
    # the last object with the keys wins (an example echoed before the real reply does not)
    text = 'e.g. {"reason": "example", "same_answer": false} real: {"reason": "real", "same_answer": true}'
    assert read_json_reply(text, check)[0]["reason"] == "real"


def test_compose_question():
    restated = "The Eiffel Tower stands in the country where the user's aunt lives."
    assert compose_question(restated, "Where does the aunt live?") == f"{restated} Where does the aunt live?"
    assert compose_question(restated, restated + " Where?") == restated + " Where?"


def test_step_outputs_without_a_call_and_check_verdicts(tmp_path):
    with warnings.catch_warnings():  # distilabel 1.5.3 imports its own deprecated alias module
        warnings.simplefilter("ignore", DeprecationWarning)
        from distilabel.pipeline import Pipeline

    def llm():
        return make_llm("http://127.0.0.1:9/v1", "m", "k", CHECK_SCHEMA, temperature=0.0, max_new_tokens=8)

    with Pipeline(name="unit", cache_dir=tmp_path):
        restate, check = RestateWithFacts(name="r", llm=llm()), ConsistencyCheck(name="c", llm=llm())
    row = {"original_question": "Capital of Peru?", "answers": ["Lima"], "privacy_items": ["The user's aunt..."],
           "restated": "r", "question": "Where does the user's aunt live?", "inject_error": None}
    assert restate.without_call(row) is None and check.without_call(row) is None
    assert restate.without_call({**row, "inject_error": "facts: bad"}) == {"restated": None,
                                                                          "inject_error": "facts: bad"}
    assert restate.without_call({**row, "privacy_items": None})["inject_error"].startswith("restate: missing input")
    assert check.without_call({**row, "inject_error": "ask: bad"}) == {"check_ok": None, "check_reason": SKIPPED}
    leaked = check.without_call({**row, "question": "Is it LIMA, where my aunt lives?"})
    assert leaked == {"check_ok": False, "check_reason": f"{ANSWER_IN_QUESTION} ('Lima')"}

    def verdict(same, inside):
        return json.dumps({"reason": "r", "same_answer": same, "answer_in_question": inside})

    assert check.format_output(verdict(True, False), row) == {"check_ok": True, "check_reason": "r"}
    assert check.format_output(verdict(False, False), row)["check_reason"].startswith(ANSWER_CHANGED)
    assert check.format_output(verdict(True, True), row)["check_reason"].startswith(ANSWER_IN_QUESTION)
    assert check.format_output(None, row) == {"check_ok": None, "check_reason": f"check: {NO_GENERATION}"}
    assert check.format_output("yes", row)["check_reason"].startswith("check: no JSON object")


def test_endpoint_llm_drops_a_refused_response_format_and_keeps_failures_per_row():
    import asyncio

    import httpx
    import openai

    llm = make_llm("http://127.0.0.1:9/v1", "m", "k", CHECK_SCHEMA, temperature=0.0, max_new_tokens=8)
    llm.load()
    seen = []

    async def fake_agenerate(input, num_generations=1, **kwargs):
        seen.append(kwargs.get("extra_body"))
        if input == "boom":
            raise RuntimeError("connection reset")
        if kwargs.get("extra_body"):
            request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
            raise openai.BadRequestError("response_format is not supported", body=None,
                                         response=httpx.Response(400, request=request))
        return {"generations": ["ok"] * num_generations, "statistics": {}}

    object.__setattr__(llm, "agenerate", fake_agenerate)
    outs = asyncio.run(llm._agenerate(["a", "boom"], 1, **llm.get_generation_kwargs()))
    assert [o["generations"] for o in outs] == [["ok"], [None]]
    assert asyncio.run(llm._agenerate(["b"], 1, **llm.get_generation_kwargs()))[0]["generations"] == ["ok"]
    assert seen[-1] is None  # once refused, the schema is no longer sent


def test_prompts_carry_the_seeds_style_and_train_never_gets_heldout_members(good_run):
    """The LLM path is steered on the same slot families as the offline injector: each seed's person, sensitive
    detail and register reach the prompts; a lowercase or chat register lowercases the whole question."""
    from pipelines.families import REGISTER_TEXT, heldout_keys, llm_style

    seeds, accepted, _, srv, *_ = good_run
    facts = [b["messages"][-1]["content"] for b in srv.requests if step_of(b["messages"]) == "facts"]
    asks = [b["messages"][-1]["content"] for b in srv.requests if step_of(b["messages"]) == "ask"]
    for s, q in zip(seeds, accepted, strict=True):
        st = llm_style(s.id, s.split, None, 0.4)
        assert any(f"Person: the user's {st['who']}\nSensitive detail: {st['detail']}" in f for f in facts)
        assert any(f"Register: {REGISTER_TEXT[st['register']]}" in a for a in asks)
        assert q.meta["members"] == st["members"] and q.meta["register"] == st["register"]
        assert (q.question == q.question.lower()) == (st["register"] in ("lowercase", "chat"))
    held = heldout_keys()
    styles = {sp: [llm_style(f"seed-{i}", sp, None, 0.4) for i in range(400)] for sp in ("train", "test")}
    assert not any(set(st["members"]) & held or st["heldout_reason"] for st in styles["train"])
    test_held = [st for st in styles["test"] if st["heldout_reason"]]
    assert 100 < len(test_held) < 220 and {st["heldout_reason"] for st in test_held} == {"who", "detail", "register"}
    for st in test_held:
        assert any(k.startswith(st["heldout_reason"] + ":") and k in held for k in st["members"])
    assert {st["register"] for st in styles["train"]} == {"formal", "lowercase", "typos"}
    assert llm_style("x", "test", "who", 0.0)["heldout_reason"] == "who"  # a seed's own mark wins
