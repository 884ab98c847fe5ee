"""The episode loop over a scripted SLM and a real local HTTP endpoint that records what it receives."""

from seekhelp import protocol
from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
from seekhelp.backends.scripted_server import ScriptedServer
from seekhelp.records import Question, Trajectory
from seekhelp.runtime import Runtime, RuntimeConfig
from tests.fakes import ScriptedSLM

PRIVATE_Q = Question(
    question="My sister Ana Ruiz moved to Peru last spring and I will visit her in its capital. Which city?",
    answers=["Lima"],
    privacy_items=["The user's sister Ana Ruiz moved to Peru last spring.", "The user will visit Ana in the capital."],
)


def _slm_asks_then_answers(conv: list[dict]) -> str:
    replies = [m for m in conv if m["role"] == "user" and m["content"].startswith("<agent-reply>")]
    if not replies:
        return protocol.render_slm_turn("I need the capital of Peru.", "message", "What is the capital of Peru?")
    return protocol.render_slm_turn("The expert says Lima.", "answer", "Lima")


def _backend(server: ScriptedServer) -> OpenAIBackend:
    return OpenAIBackend(EndpointConfig(base_url=server.base_url, model="scripted"))


def test_dynamic_episode_records_every_turn_and_the_llm_sees_only_messages():
    with ScriptedServer(reply=lambda m: "Peru's capital.\n<information>The capital of Peru is Lima.</information>") \
            as server:
        rt = Runtime(ScriptedSLM(_slm_asks_then_answers), _backend(server), RuntimeConfig(guard="off"))
        (traj,) = rt.run([PRIVATE_Q])
    assert traj.final_answer == "Lima" and traj.stop_reason == "answer" and traj.format_ok
    assert [t.role for t in traj.turns] == ["slm", "llm", "slm"]
    assert traj.turns[1].sent == "What is the capital of Peru?"
    assert traj.turns[1].action == "information" and "Lima" in traj.turns[1].content
    assert all(t.prompt_tokens > 0 and t.completion_tokens > 0 for t in traj.turns)
    received = "\n".join(server.user_texts())
    assert PRIVATE_Q.question not in received
    for item in PRIVATE_Q.privacy_items:
        assert item not in received
    assert "Ana Ruiz" not in received
    again = Trajectory.from_dict(traj.to_dict())
    assert again.id == traj.id and again.to_dict() == traj.to_dict()


def test_guard_blocks_a_leaking_message_before_it_reaches_the_endpoint():
    def leaky(conv):
        if any(m["content"].startswith("<agent-reply>") for m in conv if m["role"] == "user"):
            return protocol.render_slm_turn("ok", "answer", "Lima")
        return protocol.render_slm_turn("ask", "message", "My sister Ana Ruiz moved to Peru last spring: capital?")

    with ScriptedServer() as server:
        rt = Runtime(ScriptedSLM(leaky), _backend(server), RuntimeConfig(guard="block"))
        (traj,) = rt.run([PRIVATE_Q])
    assert server.requests == []
    assert traj.turns[0].guard == "blocked" and traj.turns[1].role == "guard"
    assert traj.n_llm_calls == 0 and traj.final_answer == "Lima"


def test_all_slm_turns_of_a_step_are_one_batch_and_n_max_stops_endless_askers():
    def ask_again(conv):  # a new request every turn (an identical one would end the episode, see below)
        k = sum(1 for m in conv if m["role"] == "assistant")
        return protocol.render_slm_turn("hmm", "message", f"Tell me about river number {k}.")

    always_ask = ScriptedSLM(ask_again)
    qs = [Question(question=f"Question number {i}?", answers=["x"]) for i in range(5)]
    with ScriptedServer() as server:
        trajs = Runtime(always_ask, _backend(server), RuntimeConfig(n_max=3, guard="off")).run(qs)
    assert always_ask.batches == [5, 5, 5, 5]
    assert all(t.stop_reason == "n_max" and t.n_llm_calls == 3 and not t.format_ok for t in trajs)
    assert len(server.requests) == 15
    assert len({t.id for t in trajs}) == 5


def test_a_repeated_blocked_message_ends_the_episode_and_the_slm_is_told_why():
    seen = []

    def stubborn(conv):
        seen.append(conv[-1]["content"])
        return protocol.render_slm_turn("ask", "message", "Does Ana like Peru?")

    with ScriptedServer() as server:
        (traj,) = Runtime(ScriptedSLM(stubborn), _backend(server), RuntimeConfig(n_max=4, guard="block")).run(
            [PRIVATE_Q])
    assert server.requests == [] and traj.stop_reason == "repeat"
    assert [t.role for t in traj.turns] == ["slm", "guard", "slm"]
    notice = traj.turns[1].content
    assert "named one of the user's people" in notice and "Ana" not in notice
    assert seen[1] == protocol.render_agent_reply("information", notice)
    assert traj.attempted == ["Does Ana like Peru?", "Does Ana like Peru?"] and traj.messages == []


def test_a_tool_that_may_not_ask_back_is_shown_as_information_when_it_replies():
    def slm(conv):
        if any(m["content"].startswith("<agent-reply>") for m in conv if m["role"] == "user"):
            assert conv[-1]["content"].startswith("<agent-reply><information>")  # never a <need>
            return protocol.render_slm_turn("ok", "answer", "Lima")
        return protocol.render_slm_turn("ask", "message", "Which capital?")

    with ScriptedServer(reply=lambda m: "<need>Which country?</need>") as server:
        cfg = RuntimeConfig(guard="off", llm_can_ask=False)
        (traj,) = Runtime(ScriptedSLM(slm), _backend(server), cfg).run([PRIVATE_Q])
    llm = traj.turns[1]
    assert llm.action == "information" and llm.content == "Which country?" and llm.errors
    assert traj.final_answer == "Lima"


def test_unparseable_slm_output_ends_the_episode_as_a_format_error():
    garbage = ScriptedSLM(lambda conv: "I think the answer might be Lima but I am not sure")
    with ScriptedServer() as server:
        (traj,) = Runtime(garbage, _backend(server), RuntimeConfig()).run([PRIVATE_Q])
    assert traj.stop_reason == "format_error" and not traj.format_ok and traj.turns[0].errors
    assert server.requests == []


def test_grounding_facts_go_into_the_llm_system_prompt_only():
    with ScriptedServer() as server:
        rt = Runtime(ScriptedSLM(_slm_asks_then_answers), _backend(server), RuntimeConfig(guard="off"),
                     grounder=lambda q: ["The capital of Peru is Lima."])
        rt.run([PRIVATE_Q])
    system = server.requests[0]["messages"][0]
    assert system["role"] == "system" and "The capital of Peru is Lima." in system["content"]


def test_need_replies_come_back_as_context_requests():
    def slm(conv):
        n = sum(1 for m in conv if m["role"] == "user" and m["content"].startswith("<agent-reply>"))
        if n == 0:
            return protocol.render_slm_turn("ask", "message", "Which capital?")
        if n == 1:
            assert "<agent-reply><need>" in conv[-1]["content"]
            return protocol.render_slm_turn("add context", "message", "The capital of Peru.")
        return protocol.render_slm_turn("done", "answer", "Lima")

    replies = iter(["<need>Which country do you mean?</need>", "<information>Lima.</information>"])
    with ScriptedServer(reply=lambda m: next(replies)) as server:
        (traj,) = Runtime(ScriptedSLM(slm), _backend(server), RuntimeConfig(guard="off")).run([PRIVATE_Q])
    assert [t.action for t in traj.turns if t.role == "llm"] == ["need", "information"]
    assert traj.final_answer == "Lima"
    second = server.requests[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
