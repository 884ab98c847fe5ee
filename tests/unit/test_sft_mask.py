"""The SFT loss falls on the SLM's own tokens only, checked token by token on SFTTrainer's own preprocessing."""

from pathlib import Path

import pytest

from seekhelp.prompts import load_prompt
from seekhelp.protocol import render_agent_reply, render_slm_turn

PRIVATE = ["The user's sister Maren Holt moved to Lyon last spring.", "Maren Holt works as a violin teacher."]
REPLY = ("Lyon is a city in east-central France, at the confluence of the Rhône and the Saône; it is the capital "
         "of the Auvergne-Rhône-Alpes region.")


def dialogue() -> list[dict]:
    question = ("My sister Maren Holt, a violin teacher, moved to Lyon last spring. In which country does my sister "
                "live now?")
    return [
        {"role": "system", "content": load_prompt("slm_dynamic")},
        {"role": "user", "content": question},  # privacy items are labels, never prompt text
        {"role": "assistant", "content": render_slm_turn(
            "The question says my sister lives in Lyon. I am not sure which country Lyon is in, so I ask the "
            "expert a general question without naming her.", "message", "Which country is the city of Lyon in?")},
        {"role": "user", "content": render_agent_reply("information", REPLY)},
        {"role": "assistant", "content": render_slm_turn(
            "The expert says Lyon is in France, so my sister lives in France.", "answer", "France")},
    ]


@pytest.fixture(scope="module")
def prepared(smollm2_dir, tmp_path_factory):
    """(tokenizer, messages, input_ids, labels) from SFTTrainer's preprocessing of a 1-row dataset."""
    import datasets
    from trl import ModelConfig, SFTConfig

    from sft.train import SFTScriptArguments, build_trainer

    tmp = tmp_path_factory.mktemp("sft-mask")
    messages = dialogue()
    datasets.Dataset.from_dict({"messages": [messages]}).save_to_disk(str(tmp / "data"))
    trainer = build_trainer(
        SFTScriptArguments(dataset_path=str(tmp / "data")),
        SFTConfig(output_dir=str(tmp / "out"), bf16=False, activation_checkpointing=False, report_to="none",
                  max_length=2048, per_device_train_batch_size=1, assistant_only_loss=True),  # as every recipe
        ModelConfig(model_name_or_path=smollm2_dir))
    row = trainer.train_dataset[0]
    return trainer.processing_class, messages, row["input_ids"], row["labels"]


def _spans(text: str, messages: list[dict]) -> list[tuple[str, int, int]]:
    """(role, start, end) of each message's trained-or-not text in the rendered chat: its content, and for the
    assistant also the <|im_end|> that closes its turn."""
    spans, pos = [], 0
    for m in messages:
        start = text.index(m["content"], pos)
        end = start + len(m["content"])
        if m["role"] == "assistant":
            assert text[end:].startswith("<|im_end|>")
            end += len("<|im_end|>")
        spans.append((m["role"], start, end))
        pos = end
    return spans


def test_template_has_generation_markers_and_renders_like_smollm2(prepared, smollm2_dir):
    from transformers import AutoTokenizer
    from trl.chat_template_utils import has_generation_markers

    tok, messages, _, _ = prepared
    original = AutoTokenizer.from_pretrained(smollm2_dir)
    assert has_generation_markers(tok.chat_template) and not has_generation_markers(original.chat_template)
    # Inference with the model's own template sees exactly what training saw.
    assert tok.apply_chat_template(messages, tokenize=False) == original.apply_chat_template(messages, tokenize=False)
    prompt = messages[:2]
    assert (tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            == original.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True))


def test_every_trained_token_is_slm_text_and_nothing_else(prepared):
    tok, messages, input_ids, labels = prepared
    text = tok.apply_chat_template(messages, tokenize=False)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == input_ids  # offsets below describe exactly the trainer's tokens
    spans = _spans(text, messages)
    slm = [(s, e) for role, s, e in spans if role == "assistant"]
    assert len(slm) == 2
    for k, ((a, b), tid, label) in enumerate(zip(enc["offset_mapping"], input_ids, labels, strict=True)):
        piece = tok.decode([tid])
        inside_slm = any(s <= a and b <= e for s, e in slm)
        if label != -100:
            assert label == tid
            assert inside_slm, f"token {k} {piece!r} at {a}:{b} is trained but lies outside every SLM turn"
        else:
            touches_slm = any(a < e and s < b for s, e in slm)
            assert not touches_slm, f"token {k} {piece!r} at {a}:{b} is SLM text but is masked out"
    # Each non-SLM message (system prompt, question with private facts, the LLM's reply) is masked in full.
    for role, s, e in spans:
        if role == "assistant":
            continue
        covered = [label for (a, b), label in zip(enc["offset_mapping"], labels, strict=True) if a < e and s < b]
        assert covered and all(label == -100 for label in covered), role


def test_trained_tokens_decode_to_the_slm_turns(prepared):
    tok, messages, input_ids, labels = prepared
    trained = tok.decode([t for t, label in zip(input_ids, labels, strict=True) if label != -100])
    expected = "".join(m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant")
    assert trained == expected
    for secret in [*PRIVATE, REPLY, "<agent-reply>", "<information>", "In which country"]:
        assert secret not in trained
    masked = tok.decode([t for t, label in zip(input_ids, labels, strict=True) if label == -100])
    for secret in [messages[1]["content"], REPLY, "<agent-reply><information>"]:
        assert secret in masked


def test_trainer_mask_matches_the_template_mask(prepared):
    tok, messages, input_ids, labels = prepared
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert out["input_ids"] == input_ids
    assert [int(label != -100) for label in labels] == out["assistant_masks"]


def test_own_template_used_when_the_model_has_none(smollm2_dir, tmp_path):
    from sft.chat_templates import CHATML_TEMPLATE, prepare_tokenizer

    tok = prepare_tokenizer(smollm2_dir, None)
    assert tok.chat_template == CHATML_TEMPLATE.read_text(encoding="utf-8")
    custom = tmp_path / "t.jinja"
    custom.write_text(CHATML_TEMPLATE.read_text(encoding="utf-8").replace("ChatML", "ChatML (copy)"))
    assert "copy" in prepare_tokenizer(smollm2_dir, str(custom)).chat_template
    assert Path(CHATML_TEMPLATE).is_file()
