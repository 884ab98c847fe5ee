"""The batched transformers backend on a tiny random model; the static engine: one generate call per micro-batch
(the slot engine has its own tests in test_local_backend_engine.py)."""

import asyncio

from seekhelp.backends.base import GenParams, truncate_at_stop
from seekhelp.backends.local import TransformersBackend


def test_batched_generation_returns_one_completion_per_conversation(tiny_model_dir):
    backend = TransformersBackend(tiny_model_dir, max_batch_size=4, engine="static")
    convs = [[{"role": "user", "content": "word " * (i + 1)}] for i in range(10)]
    outs = asyncio.run(backend.generate(convs, GenParams(max_new_tokens=8)))
    assert len(outs) == 10
    assert backend.stats["batches"] == 3 and backend.stats["calls"] == 10
    assert all(o.prompt_tokens > 0 and 0 < o.completion_tokens <= 8 for o in outs)
    prompt_lengths = [o.prompt_tokens for o in outs]
    assert prompt_lengths == sorted(prompt_lengths)  # results come back in input order


def test_sampling_with_a_seed_is_reproducible(tiny_model_dir):
    backend = TransformersBackend(tiny_model_dir)
    conv = [[{"role": "user", "content": "hello"}]] * 3
    p = GenParams(max_new_tokens=6, temperature=1.0, seed=3)
    a = [o.text for o in asyncio.run(backend.generate(conv, p))]
    b = [o.text for o in asyncio.run(backend.generate(conv, p))]
    assert a == b


def test_truncate_at_stop_keeps_the_earliest_stop():
    assert truncate_at_stop("<think>a</think><answer>x</answer> tail", ["</message>", "</answer>"]) == \
        "<think>a</think><answer>x</answer>"
    assert truncate_at_stop("no stop here", ["</answer>"]) == "no stop here"


def test_shared_prefix_cache_gives_the_same_greedy_tokens(tiny_model_dir):
    system = {"role": "system", "content": "You are a careful assistant who answers briefly. " * 6}
    convs = [[system, {"role": "user", "content": "tell me about " + "word " * (i % 5 + 1)}] for i in range(7)]
    params = GenParams(max_new_tokens=10)
    plain = TransformersBackend(tiny_model_dir, max_batch_size=4, prefix_cache=False, engine="static")
    cached = TransformersBackend(model=plain.model, tokenizer=plain.tokenizer, max_batch_size=4, engine="static")
    want = asyncio.run(plain.generate(convs, params))
    got = asyncio.run(cached.generate(convs, params))
    assert [o.text for o in got] == [o.text for o in want]
    assert [o.prompt_tokens for o in got] == [o.prompt_tokens for o in want]
    assert plain.stats["prefix_tokens_reused"] == 0 and cached.stats["prefix_tokens_reused"] > 7 * 32
    again = asyncio.run(cached.generate(convs[:3], params))  # the prefix cache is reused, not consumed
    assert [o.text for o in again] == [o.text for o in want[:3]]
