import pytest

from seekhelp.records import Trajectory, Turn
from seekhelp.rewards import (
    REWARD_FUNCS,
    RewardConfig,
    compute_reward,
    efficiency_reward,
    estimate_easy,
    feedback_reward,
    format_reward,
    make_total_reward,
    privacy_reward,
    quality_reward,
    split_completion,
    total_reward,
)

ANSWERS = ["Florida", "FL"]


def _traj(n_calls=0, answer="Florida", need=False, format_ok=True, blocked_message=False):
    turns = []
    for k in range(n_calls):
        turns.append(Turn(role="slm", raw="<think>t</think><message>q</message>", action="message", content="q"))
        action = "need" if need and k == 0 else "information"
        turns.append(Turn(role="llm", raw=f"<{action}>x</{action}>", action=action, content="x", sent="q"))
    if blocked_message:
        turns.append(Turn(role="slm", raw="<think>t</think><message>q</message>", action="message", content="q",
                          guard="blocked"))
    turns.append(Turn(role="slm", raw=f"<think>t</think><answer>{answer}</answer>", action="answer", content=answer))
    return Trajectory(question_id="q1", strategy="dynamic", slm="s", llm="l", turns=turns, final_answer=answer,
                      format_ok=format_ok)


def test_easy_answered_alone_correct():
    r = compute_reward(_traj(0), ANSWERS, leaked=False, is_easy=True)
    assert (r.r_format, r.r_quality, r.r_feedback, r.r_privacy, r.r_efficiency) == (0, 1, 0, 0, 0)
    assert r.total == 1.0 and r.n_turns == 0


def test_easy_but_asked():
    r = compute_reward(_traj(1), ANSWERS, leaked=False, is_easy=True)
    assert r.r_efficiency == -1.0 and r.total == pytest.approx(1 - 0.2)
    blocked = compute_reward(_traj(0, blocked_message=True), ANSWERS, leaked=False, is_easy=True)
    assert blocked.n_turns == 0 and blocked.r_efficiency == -1.0  # it tried to ask: still asked


def test_hard_turn_cost_and_all_penalties():
    cfg = RewardConfig(alpha=0.5, beta=0.2, n_max=4)
    r = compute_reward(_traj(2, answer="Texas", need=True, format_ok=False), ANSWERS, leaked=True, is_easy=False,
                       cfg=cfg)
    assert (r.r_format, r.r_quality, r.r_feedback, r.r_privacy) == (-1, 0, -1, -1)
    assert r.r_efficiency == pytest.approx(-0.5) and r.n_turns == 2
    assert r.total == pytest.approx(-1 + 0 - 1 + 0.5 * -1 + 0.2 * -0.5)
    d = r.to_dict()
    assert set(d) >= {"r_format", "r_quality", "r_feedback", "r_privacy", "r_efficiency", "total"}


def test_hard_cases():
    alone = compute_reward(_traj(0), ANSWERS, leaked=False, is_easy=False)
    assert alone.r_efficiency == 0.0 and alone.total == 1.0
    one = compute_reward(_traj(1, answer="fl"), ANSWERS, leaked=False, is_easy=False)
    assert one.r_quality == 1.0 and one.r_efficiency == pytest.approx(-0.25)
    over = compute_reward(_traj(6), ANSWERS, leaked=False, is_easy=False)
    assert over.r_efficiency == -1.0  # clipped at -1 when a trajectory ran past n_max


def test_leak_argument_forms():
    class Verdict:
        leak = True

    assert compute_reward(_traj(1), ANSWERS, leaked=Verdict(), is_easy=False).r_privacy == -1.0
    assert compute_reward(_traj(1), ANSWERS, leaked=None, is_easy=False).r_privacy == 0.0
    r = compute_reward(_traj(1), ANSWERS, leaked=True, is_easy=False, cfg=RewardConfig(alpha=1.0, beta=0.0))
    assert r.total == pytest.approx(0.0)


def test_estimate_easy():
    assert estimate_easy([True, True, False, False])
    assert not estimate_easy([True, False, False, False])
    assert estimate_easy([True, False, False], threshold=0.3)
    assert not estimate_easy([])


# --------------------------------------------------------------------------------------------- TRL adapters
GOOD_ALONE = "<think>I know it.</think>\n<answer>Florida</answer>"
GOOD_ASK = ("<think>Need help.</think>\n<message>Where does Kevin's family go in Home Alone 2?</message>"
            "<agent-reply><information>They go to New York; the plan was Florida.</information></agent-reply>"
            "<think>So Florida.</think>\n<answer>Florida</answer>")
NEED_ASK = ("<think>Ask.</think>\n<message>Where does he go?</message>"
            "<agent-reply><need>Which film?</need></agent-reply>"
            "<think>Hmm.</think>\n<answer>Texas</answer>")
BROKEN = "<message>no think</message>"


def test_split_completion():
    turns, other = split_completion(GOOD_ASK)
    assert len(turns) == 2 and turns[0].endswith("</message>") and turns[1].endswith("</answer>")
    assert len(other) == 1 and "<information>" in other[0]
    turns, other = split_completion([
        {"role": "assistant", "content": "<think>a</think><message>b</message>"},
        {"role": "user", "content": "<agent-reply><need>c</need></agent-reply>"},
        {"role": "assistant", "content": "<think>d</think><answer>e</answer>"},
    ])
    assert turns == ["<think>a</think><message>b</message>", "<think>d</think><answer>e</answer>"]
    assert other == ["<agent-reply><need>c</need></agent-reply>"]
    assert split_completion("<think>a</think><message>b</message> trailing")[0][-1] == "trailing"


def test_adapters_on_strings():
    comps = [GOOD_ALONE, GOOD_ASK, NEED_ASK, BROKEN]
    kw = {"answers": [ANSWERS, ["Florida"], '["Florida"]', "Florida"], "is_easy": [True, True, False, False],
          "leaked": [False, False, True, None]}
    prompts = ["p"] * 4
    assert format_reward(prompts, comps, **kw) == [0.0, 0.0, 0.0, -1.0]
    assert quality_reward(prompts, comps, **kw) == [1.0, 1.0, 0.0, 0.0]
    assert feedback_reward(prompts, comps, **kw) == [0.0, 0.0, -1.0, 0.0]
    assert privacy_reward(prompts, comps, **kw) == [0.0, 0.0, -1.0, 0.0]
    assert efficiency_reward(prompts, comps, **kw) == [0.0, -1.0, -0.25, -0.25]
    total = total_reward(prompts, comps, **kw)
    assert total == pytest.approx([1.0, 1.0 - 0.2, -1.0 - 0.5 - 0.05, -1.0 - 0.05])
    assert make_total_reward(RewardConfig(alpha=0, beta=0))(prompts, comps, **kw) == pytest.approx([1, 1, -1, -1])
    assert [f.__name__ for f in REWARD_FUNCS] == ["format_reward", "quality_reward", "feedback_reward",
                                                  "privacy_reward", "efficiency_reward"]
    assert total_reward.__name__ == "total_reward"


def test_adapters_on_chat_completions_and_defaults():
    chat = [
        {"role": "assistant", "content": "<think>a</think>\n<message>Capital of France?</message>"},
        {"role": "user", "content": "<agent-reply><information>Paris</information></agent-reply>"},
        {"role": "assistant", "content": "<think>b</think>\n<answer>Paris</answer>"},
    ]
    kw = {"answers": [["Paris"]]}  # no is_easy (= hard), no leaked, no privacy items
    assert total_reward(None, [chat], **kw) == pytest.approx([1.0 - 0.2 * 0.25])
    assert feedback_reward(None, [chat], llm_need=[True], **kw) == [-1.0]


def test_privacy_adapter_falls_back_to_detector():
    leaky = "<think>a</think>\n<message>My cousin lives in Paris. What is there?</message>"
    clean = "<think>a</think>\n<message>What is the capital of France?</message>"
    kw = {"answers": [["x"], ["x"]], "privacy_items": [["the user's cousin lives in Paris"]] * 2}
    assert privacy_reward(None, [leaky, clean], **kw) == [-1.0, 0.0]
