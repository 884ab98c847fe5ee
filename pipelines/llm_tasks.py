"""distilabel steps for LLM privacy injection (the paper's three rewrite steps plus its check) and the LLM judge.

Every task asks the model for one JSON object, passes that object's JSON schema as ``response_format`` (servers
that enforce it, such as vLLM or OpenAI, constrain the output; ``transformers serve`` accepts the field and ignores
it), and ALWAYS validates the reply itself. A reply that cannot be used never loses the row: the row goes on with an
error string (``inject_error`` for the three rewrite steps, ``check_ok`` None for the check, ``judge_error`` for
the judge). A failed API call becomes a None generation ("no generation") for that row only.

Rows whose earlier step failed are passed on without a call, and so are rows the check rejects deterministically
(the answer, or an alias, is written in the question): the LLM is only asked where its answer can change the outcome.

Annotations here are evaluated eagerly (no postponed evaluation): distilabel reads the annotations of ``process``.
"""

import asyncio
import json
import re
import warnings
from typing import Any, ClassVar

import openai
from pydantic import PrivateAttr

# distilabel 1.5.3's own field definitions (and models derived from them) warn under recent pydantic: not ours.
warnings.filterwarnings("ignore", message=".*attribute with value None was provided to the `Field",
                        module="pydantic")

from distilabel.models.llms import OpenAILLM  # noqa: E402
from distilabel.models.llms.utils import prepare_output  # noqa: E402
from distilabel.steps import Step, StepInput  # noqa: E402
from distilabel.steps.tasks import Task  # noqa: E402
from distilabel.typing import StepOutput  # noqa: E402

from pipelines.offline_inject import answer_in  # noqa: E402
from seekhelp.leak_judge import JUDGE_SCHEMA, build_judge_messages, parse_judge_verdict  # noqa: E402
from seekhelp.prompts import load_prompt  # noqa: E402

NO_GENERATION = "no generation"
SKIPPED = "skipped: an earlier step failed"
ANSWER_IN_QUESTION = "answer appears in question"
ANSWER_CHANGED = "answer changed"


def _schema(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


FACTS_SCHEMA = _schema({"privacy_items": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                                          "maxItems": 4}})
RESTATE_SCHEMA = _schema({"restated": {"type": "string"}})
QUESTION_SCHEMA = _schema({"question": {"type": "string"}})
CHECK_SCHEMA = _schema({"reason": {"type": "string"}, "same_answer": {"type": "boolean"},
                        "answer_in_question": {"type": "boolean"}})


# ------------------------------------------------------------------------------------------ replies
def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def read_json_reply(text: str | None, fields: dict[str, type]) -> tuple[dict[str, Any] | None, str | None]:
    """The last JSON object in ``text`` that has every key of ``fields``, checked and cleaned; else (None, error).

    Prose, code fences or a think block around the object are fine. Types: ``str`` must be a non-empty string,
    ``list`` a list of non-empty strings (at least one), ``bool`` a JSON boolean (or the string "true"/"false").
    """
    if text is None:
        return None, NO_GENERATION
    decoder, pos, found = json.JSONDecoder(), len(text), None
    for _ in range(500):
        pos = text.rfind("{", 0, pos)
        if pos < 0:
            break
        try:
            obj, _ = decoder.raw_decode(text, pos)
        except ValueError:
            continue
        if isinstance(obj, dict) and all(k in obj for k in fields):
            found = obj
            break
    if found is None:
        return None, f"no JSON object with keys {sorted(fields)} in the reply"
    out: dict[str, Any] = {}
    for key, kind in fields.items():
        value = found[key]
        if kind is str:
            if not isinstance(value, str) or not value.strip():
                return None, f"'{key}' must be a non-empty string"
            out[key] = " ".join(value.split())
        elif kind is list:
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
                return None, f"'{key}' must be a non-empty list of non-empty strings"
            out[key] = list(dict.fromkeys(" ".join(v.split()) for v in value))
        elif kind is bool:
            if (flag := _as_bool(value)) is None:
                return None, f"'{key}' must be true or false"
            out[key] = flag
    return out, None


def _count(tokens: Any) -> int:
    if isinstance(tokens, int):
        return tokens
    return sum(t for t in tokens or [] if isinstance(t, int))


def render_answer(answers: list[str]) -> str:
    head, rest = answers[0], [a for a in answers[1:] if a != answers[0]]
    return head + (f" (also written: {'; '.join(rest)})" if rest else "")


def render_items(items: list[str]) -> str:
    return "\n".join(f"- {p}" for p in items)


def compose_question(restated: str, ask: str) -> str:
    """The final question: the restated fact, then the new question (unless the model already wrote both)."""
    if ask.lower().startswith(restated.rstrip(".").lower()):
        return ask
    return f"{restated.rstrip()} {ask.lstrip()}"


# ------------------------------------------------------------------------------------------ LLM
class EndpointLLM(OpenAILLM):
    """distilabel's OpenAILLM with per-call failures kept per row.

    distilabel gathers a batch's calls so that one raised error voids the whole batch; here a call that still fails
    after the client's retries becomes a None generation for its own row. A server that refuses ``response_format``
    (HTTP 400/422) is asked again without it, and from then on never gets it (prompt-only JSON).
    """

    _plain_json: bool = PrivateAttr(False)

    async def _agenerate(self, inputs: list[Any], num_generations: int = 1, **kwargs: Any) -> list[Any]:
        return list(await asyncio.gather(*(self._one(i, num_generations, kwargs) for i in inputs)))

    async def _one(self, input: Any, num_generations: int, kwargs: dict[str, Any]) -> Any:
        for _ in range(2):
            extra = dict(kwargs.get("extra_body") or {})
            if self._plain_json:
                extra.pop("response_format", None)
            try:
                return await self.agenerate(input=input, num_generations=num_generations,
                                            **{**kwargs, "extra_body": extra or None})
            except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
                if "response_format" not in extra or not any(w in str(e).lower() for w in ("response_format", "json")):
                    return self._failed(e, num_generations)
                self._logger.warning(f"endpoint refused response_format, using prompt-only JSON: {str(e)[:200]}")
                self._plain_json = True
            except Exception as e:  # any failure of one call must not void the other rows of the batch
                return self._failed(e, num_generations)
        return self._failed(RuntimeError("response_format fallback failed"), num_generations)

    def _failed(self, error: Exception, n: int) -> Any:
        self._logger.warning(f"LLM call failed ({type(error).__name__}: {str(error)[:200]}); row marked no generation")
        return prepare_output(generations=[None] * n)


def make_llm(base_url: str, model: str, api_key: str, schema: dict[str, Any] | None, *, temperature: float,
             max_new_tokens: int, max_retries: int = 3, timeout_s: int = 120) -> EndpointLLM:
    """An EndpointLLM that asks for ``schema`` through ``response_format`` (None: prompt-only JSON)."""
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "temperature": temperature}
    if schema is not None:
        kwargs["extra_body"] = {"response_format": {"type": "json_schema",
                                                    "json_schema": {"name": "reply", "schema": schema}}}
    return EndpointLLM(model=model, base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout_s,
                       generation_kwargs=kwargs)


# ------------------------------------------------------------------------------------------ tasks
class JsonTask(Task):
    """A task whose reply is one JSON object; subclasses say what to send, what to read and when to skip."""

    PROMPT: ClassVar[str] = ""
    STEP: ClassVar[str] = ""  # short name: the raw reply goes to column f"{STEP}_raw"
    FIELDS: ClassVar[dict[str, type]] = {}
    SCHEMA: ClassVar[dict[str, Any]] = {}

    add_raw_output: bool = False  # our own f"{STEP}_raw" column survives the next step; distilabel's does not
    add_raw_input: bool = False

    def _messages(self, **slots: str) -> list[dict[str, str]]:
        system, user = load_prompt(self.PROMPT).split("[[user]]", 1)
        user = re.sub(r"\{(\w+)\}", lambda m: slots.get(m.group(1), m.group(0)), user)  # one pass: no re-expansion
        return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]

    def without_call(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """The outputs of a row that needs no call (None: call the LLM).

        A row an earlier step failed keeps that first error; a row missing an input (an earlier step that crashed
        as a whole leaves its outputs None) fails here with a reason.
        """
        if row.get("inject_error"):
            return {**{k: None for k in self.outputs}, "inject_error": row["inject_error"]}
        missing = [c for c in self.inputs if c != "inject_error" and not row.get(c)]
        return self.failed(f"missing input {missing} from an earlier step") if missing else None

    def failed(self, error: str) -> dict[str, Any]:
        return {**{k: None for k in self.outputs}, "inject_error": f"{self.STEP}: {error}"}

    def build(self, reply: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict[str, Any]:
        reply, error = read_json_reply(output, self.FIELDS)
        return self.failed(error) if reply is None else self.build(reply, input or {})

    def process(self, inputs: StepInput) -> StepOutput:
        rows = list(inputs)
        ready = [self.without_call(row) for row in rows]
        todo = [i for i, done in enumerate(ready) if done is None]
        generations = self.llm.generate_outputs(inputs=[self.format_input(rows[i]) for i in todo],
                                                num_generations=1, **self.llm.get_generation_kwargs()) if todo else []
        replies = dict(zip(todo, generations, strict=True))
        out = []
        for i, row in enumerate(rows):
            new = {**row, "model_name": self.llm.model_name}
            if i not in replies:
                new.update(ready[i] or {})
            else:
                text = replies[i]["generations"][0]
                stats = replies[i].get("statistics") or {}
                try:
                    new.update(self.format_output(text, row))
                except Exception as e:  # a bug in a builder must not lose the row either
                    new.update(self.failed(f"could not read the reply ({type(e).__name__}: {e})"))
                new[f"{self.STEP}_raw"] = text
                new["prompt_tokens"] = (row.get("prompt_tokens") or 0) + _count(stats.get("input_tokens"))
                new["completion_tokens"] = (row.get("completion_tokens") or 0) + _count(stats.get("output_tokens"))
            out.append(new)
        yield out


class InventPersonalFacts(JsonTask):
    """Step 1: two or three invented personal facts tied to the question's entities and to its answer."""

    PROMPT, STEP, FIELDS, SCHEMA = "inject_facts", "facts", {"privacy_items": list}, FACTS_SCHEMA

    @property
    def inputs(self) -> list[str]:
        return ["original_question", "answers", "who", "detail"]

    @property
    def outputs(self) -> list[str]:
        return ["privacy_items", "inject_error"]

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        return self._messages(question=input["original_question"], answer=render_answer(input["answers"]),
                              who=input["who"], detail=input["detail"])

    def build(self, reply: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        return {"privacy_items": reply["privacy_items"][:4], "inject_error": None}


class RestateWithFacts(JsonTask):
    """Step 2: the core fact restated so that the answer is only referred to through the personal facts."""

    PROMPT, STEP, FIELDS, SCHEMA = "inject_restate", "restate", {"restated": str}, RESTATE_SCHEMA

    @property
    def inputs(self) -> list[str]:
        return ["original_question", "answers", "privacy_items", "inject_error"]

    @property
    def outputs(self) -> list[str]:
        return ["restated", "inject_error"]

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        return self._messages(question=input["original_question"], answer=render_answer(input["answers"]),
                              privacy_items=render_items(input["privacy_items"]))

    def build(self, reply: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        return {"restated": reply["restated"], "inject_error": None}


class AskThroughFacts(JsonTask):
    """Step 3: a new question about the personal fact that stands for the answer, after the restated fact."""

    PROMPT, STEP, FIELDS, SCHEMA = "inject_question", "ask", {"question": str}, QUESTION_SCHEMA

    @property
    def inputs(self) -> list[str]:
        return ["answers", "privacy_items", "restated", "register_text", "inject_error"]

    @property
    def outputs(self) -> list[str]:
        return ["question", "inject_error"]

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        return self._messages(restated=input["restated"], privacy_items=render_items(input["privacy_items"]),
                              answer=render_answer(input["answers"]), register_text=input["register_text"])

    def build(self, reply: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        question = compose_question(row["restated"], reply["question"])
        if row.get("register") in ("lowercase", "chat"):  # the restated sentence too: the whole message is lowercase
            question = question.lower()
        return {"question": question, "inject_error": None}


class ConsistencyCheck(JsonTask):
    """The paper's second check: is the answer still the same, and is it absent from the question?

    A deterministic pre-check (the answer or an alias written in the question, whole words, case and accents
    folded) rejects without a call; otherwise the LLM's verdict decides. check_ok None means the check itself
    failed (its reason says why).
    """

    PROMPT, STEP, SCHEMA = "inject_check", "check", CHECK_SCHEMA
    FIELDS: ClassVar[dict[str, type]] = {"reason": str, "same_answer": bool, "answer_in_question": bool}

    @property
    def inputs(self) -> list[str]:
        return ["original_question", "answers", "privacy_items", "question", "inject_error"]

    @property
    def outputs(self) -> list[str]:
        return ["check_ok", "check_reason"]

    def without_call(self, row: dict[str, Any]) -> dict[str, Any] | None:
        if row.get("inject_error"):
            return {"check_ok": None, "check_reason": SKIPPED}
        return super().without_call(row) or self._pre_check(row)

    def failed(self, error: str) -> dict[str, Any]:
        return {"check_ok": None, "check_reason": f"{self.STEP}: {error}"}

    @staticmethod
    def _pre_check(row: dict[str, Any]) -> dict[str, Any] | None:
        alias = answer_in(row.get("question") or "", row["answers"])
        return None if alias is None else {"check_ok": False, "check_reason": f"{ANSWER_IN_QUESTION} ({alias!r})"}

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        return self._messages(original_question=input["original_question"], answer=render_answer(input["answers"]),
                              privacy_items=render_items(input["privacy_items"]), question=input["question"])

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict[str, Any]:
        if input and (verdict := self._pre_check(input)):  # the deterministic verdict wins whatever the LLM says
            return verdict
        return super().format_output(output, input)

    def build(self, reply: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        if reply["answer_in_question"]:
            return {"check_ok": False, "check_reason": f"{ANSWER_IN_QUESTION} (checker: {reply['reason']})"}
        if not reply["same_answer"]:
            return {"check_ok": False, "check_reason": f"{ANSWER_CHANGED} (checker: {reply['reason']})"}
        return {"check_ok": True, "check_reason": reply["reason"]}


class PrivacyJudgeTask(JsonTask):
    """The leakage judge: did the messages sent to the LLM expose a privacy item? (seekhelp.privacy's prompt)."""

    STEP, SCHEMA = "judge", JUDGE_SCHEMA

    @property
    def inputs(self) -> list[str]:
        return ["messages_sent", "privacy_items"]

    @property
    def outputs(self) -> list[str]:
        return ["leak", "leaked_items", "judge_reason", "judge_error"]

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        return build_judge_messages(input["messages_sent"], input["privacy_items"])

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict[str, Any]:
        if output is None:
            return self.failed(NO_GENERATION)
        v = parse_judge_verdict(output)
        return {"leak": v.leak, "leaked_items": v.leaked_items, "judge_reason": v.reason, "judge_error": v.error}

    def failed(self, error: str) -> dict[str, Any]:
        return {"leak": None, "leaked_items": [], "judge_reason": "", "judge_error": error}


class PackRows(Step):
    """The leaf step: each row becomes (row, one JSON string), so the parquet files distilabel writes always have
    the same two-column schema however many values are None."""

    @property
    def inputs(self) -> list[str]:
        return ["row"]

    @property
    def outputs(self) -> list[str]:
        return ["row", "record"]

    def process(self, inputs: StepInput) -> StepOutput:
        yield [{"row": r["row"], "record": json.dumps({k: v for k, v in r.items() if k != "distilabel_metadata"},
                                                      ensure_ascii=False, default=str)} for r in inputs]


INJECTION_TASKS = (InventPersonalFacts, RestateWithFacts, AskThroughFacts, ConsistencyCheck)
