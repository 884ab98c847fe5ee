"""The slot engine (refill + KV kept across turns) against plain per-row `model.generate`, on a tiny random Llama.

Greedy decoding must give the same tokens as `generate` on each prompt alone, with nothing cached; the batch
layout, the refill and the reused keys/values must not change a single token.
"""

import asyncio

import pytest
import torch

from seekhelp.backends.base import GenParams, truncate_at_stop
from seekhelp.backends.kvstore import KVStore
from seekhelp.backends.local import TransformersBackend

SYSTEM = {"role": "system", "content": "You are a careful assistant who answers briefly. " * 6}


@pytest.fixture(scope="module")
def backend(smollm2_dir):
    """A tiny random Llama whose weights are large enough that greedy text varies with the prompt (the shared
    tiny model's default init writes newlines only, which would make the comparison vacuous)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True, initializer_range=0.2)
    return TransformersBackend(model=LlamaForCausalLM(cfg).eval(), tokenizer=tok, max_batch_size=3, engine="slots")


def fresh(backend, **kw) -> TransformersBackend:
    return TransformersBackend(model=backend.model, tokenizer=backend.tokenizer, max_batch_size=3,
                               **({"engine": "slots"} | kw))


def reference(backend, conversations, params: GenParams, ends: tuple = ()) -> list[str]:
    """Each conversation alone through `model.generate` (no padding, no cache), post-processed like the backend
    (cut at the tokenizer's padding/EOS and at `ends`)."""
    tok, model, texts = backend.tokenizer, backend.model, []
    for prompt in backend.render_prompts(conversations):
        ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
        kw = dict(stop_strings=params.stop, tokenizer=tok) if params.stop else {}
        with torch.inference_mode():
            seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=params.max_new_tokens, temperature=None, top_p=None, top_k=None,
                                 pad_token_id=tok.pad_token_id, **kw)
        new = []
        for t in seq[0, ids.shape[1]:].tolist():
            if t in (tok.pad_token_id, tok.eos_token_id, *ends):
                break
            new.append(t)
        texts.append(truncate_at_stop(tok.decode(new, skip_special_tokens=True), params.stop))
    return texts


def conversations(n: int) -> list[list[dict]]:
    # different lengths, more conversations than the 3 slots; some without the shared system prompt
    return [([SYSTEM] if i % 4 else []) + [{"role": "user", "content": "tell me about " + "word " * (i * 3 % 11 + 1)}]
            for i in range(n)]


def texts(backend, convs, params) -> list[str]:
    return [o.text for o in asyncio.run(backend.generate(convs, params))]


def test_greedy_equals_plain_generate_with_refill_and_two_turns(backend):
    eng = fresh(backend)
    convs = conversations(8)
    free = reference(backend, convs, GenParams(max_new_tokens=12))
    params = GenParams(max_new_tokens=12, stop=[free[0][4:7], free[5][6:9]])  # some rows end early
    first = texts(eng, convs, params)
    assert first == reference(backend, convs, params)
    assert eng.stats["refills"] >= 1  # a row joined while others were still decoding
    assert len(eng.kv_store) > 0
    second_convs = [c + [{"role": "assistant", "content": t}, {"role": "user", "content": f"and then {i}?"}]
                    for i, (c, t) in enumerate(zip(convs, first, strict=True))]
    reused, hits = eng.stats["cached_tokens_reused"], eng.stats["turn_cache_hits"]
    second = texts(eng, second_convs, params)
    assert second == reference(backend, second_convs, params)
    assert eng.stats["turn_cache_hits"] - hits == 8  # every second turn starts from a stored conversation
    first_prompts = sum(len(backend.tokenizer(p, add_special_tokens=False)["input_ids"])
                        for p in backend.render_prompts(convs))
    assert eng.stats["cached_tokens_reused"] - reused > first_prompts  # whole first prompts and part of the turns


def test_greedy_equals_static_engine_and_the_static_engine_still_works(backend):
    params = GenParams(max_new_tokens=9)
    convs = conversations(7)
    static = fresh(backend, engine="static")
    assert texts(static, convs, params) == texts(fresh(backend), convs, params)
    assert static.stats["batches"] == 3  # 7 prompts in micro-batches of 3


def test_stop_strings_cut_like_generate(backend):
    convs = conversations(6)
    free = reference(backend, convs, GenParams(max_new_tokens=16))
    # stop strings taken from the model's own output, so they do fire (mid-generation, some rows only)
    stops = [free[1][5:8], free[4][9:11], "\n" + free[2][:2]]  # the last one starts in the prompt ("assistant\n")
    params = GenParams(max_new_tokens=16, stop=stops)
    eng = fresh(backend)
    got = asyncio.run(eng.generate(convs, params))
    want = reference(backend, convs, params)
    assert [o.text for o in got] == want
    assert any(len(w) < len(f) for w, f in zip(want, free, strict=True))  # some row really stopped early
    for o in got:
        assert o.completion_tokens == len(backend.tokenizer(o.text, add_special_tokens=False)["input_ids"])


def test_a_finished_row_hands_its_slot_in_place(backend):
    # prompts of one length: a waiting prompt fits into the columns of a row that ran a few steps
    convs = [[SYSTEM, {"role": "user", "content": f"question number {i} please"}] for i in range(7)]
    free = reference(backend, convs, GenParams(max_new_tokens=14))
    params = GenParams(max_new_tokens=14, stop=[free[0][25:30], free[5][5:11]])  # rows 0, 5, 6 end early
    eng = fresh(backend)
    assert texts(eng, convs, params) == reference(backend, convs, params)
    assert eng.stats["refills_in_place"] >= 1


def test_eos_ends_a_row_like_generate(backend):
    convs = conversations(6)
    free = asyncio.run(fresh(backend).generate(convs, GenParams(max_new_tokens=10)))
    tok = backend.tokenizer
    eos = tok(free[3].text, add_special_tokens=False)["input_ids"][4]  # a token the model does produce
    config = backend.model.generation_config
    saved = config.eos_token_id
    config.eos_token_id = [saved, eos]
    try:
        eng = fresh(backend)
        got = asyncio.run(eng.generate(convs, GenParams(max_new_tokens=10)))
        want = reference(backend, convs, GenParams(max_new_tokens=10), ends=(eos,))  # `generate` stops at both
    finally:
        config.eos_token_id = saved
    assert [o.text for o in got] == want
    assert len(got[3].text) < len(free[3].text) and eng.stats["refills"] >= 1


def test_max_new_tokens_and_prompt_tokens(backend):
    eng = fresh(backend)
    convs = conversations(5)
    for n in (1, 4):
        outs = asyncio.run(eng.generate(convs, GenParams(max_new_tokens=n)))
        assert [o.text for o in outs] == reference(backend, convs, GenParams(max_new_tokens=n))
        assert all(o.completion_tokens <= n for o in outs)
    lengths = [len(backend.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in backend.render_prompts(convs)]
    assert [o.prompt_tokens for o in outs] == lengths


def test_sampling_is_seeded_and_swap_model_drops_the_store(backend):
    eng = fresh(backend)
    convs = conversations(5)
    p = GenParams(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7)
    a, b = texts(eng, convs, p), texts(eng, convs, p)
    assert a == b and len(set(a)) > 1
    assert len(eng.kv_store) > 0
    eng.swap_model(eng.model)
    assert len(eng.kv_store) == 0 and eng.kv_store.tokens == 0


def test_kv_store_longest_prefix_cap_and_replacement():
    kv = lambda n: [(torch.zeros(1, 1, n, 2), torch.zeros(1, 1, n, 2))]  # noqa: E731
    store = KVStore(max_tokens=10)
    sys_entry = store.put([1, 2, 3], kv(3), kind="prefix")
    turn = store.put([1, 2, 3, 4, 5], kv(5))
    assert store.lookup([1, 2, 3, 4, 9]) == (turn, 4)
    assert store.lookup([1, 2, 7]) [1] == 2 and store.lookup([8]) == (None, 0)
    longer = store.put([1, 2, 3, 4, 5, 6], kv(6), replaces=turn)  # extends `turn`: replaces it
    assert len(store) == 2 and store.tokens == 9 and store.lookup([1, 2, 3, 4, 5, 6, 7]) == (longer, 6)
    store.put([1, 2, 3, 0], kv(4), replaces=sys_entry)  # a prefix entry is never replaced, but the cap evicts
    assert store.tokens <= 10 and store.evicted >= 1
    assert store.lookup([1, 2, 3, 0])[1] == 4


def test_the_engine_defaults_to_slots_on_cpu_and_the_environment_overrides_it(backend, monkeypatch):
    from seekhelp.backends.local import default_engine

    monkeypatch.delenv("SEEKHELP_ENGINE", raising=False)
    assert default_engine(backend.model) == "slots"
    assert TransformersBackend(model=backend.model, tokenizer=backend.tokenizer).engine == "slots"

    class OnGPU:
        device = torch.device("cuda", 0)

    assert default_engine(OnGPU()) == "static"
    monkeypatch.setenv("SEEKHELP_ENGINE", "static")
    assert TransformersBackend(model=backend.model, tokenizer=backend.tokenizer).engine == "static"
    assert TransformersBackend(model=backend.model, tokenizer=backend.tokenizer, engine="slots").engine == "slots"
