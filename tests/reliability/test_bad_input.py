"""Bad input through the real entry points: one clear line naming the input and the problem, a non-zero exit, no
traceback, and nothing changed (the store's files hash the same, no shard folder appears).

Each case is (entry module, argv, words the error line must contain). `{...}` placeholders are filled with the
paths of the files built by `bad_files` and the `small_store` fixture.
"""

import json
import os
import re
from pathlib import Path

import duckdb
import pytest

from tests.reliability.conftest import DEMO_RECIPE, folder_state, free_port, generate_args, run_module

GEN, CLI, SFT, RL = "pipelines.generate", "seekhelp.cli", "sft.train", "rl.loop"
ERROR_LINE = re.compile(r"^(?:[\w.]+: )?error: ")


def _local_seeds(name: str) -> list[str]:
    return ["seeds.kind=local", f"seeds.path={{bad}}/{name}", "judge.llm_judge=false"]


# id: (module, argv (placeholders), words expected in the error line (case-insensitive))
CASES = {
    "seeds-malformed-jsonl": (GEN, _local_seeds("malformed.jsonl"), ["malformed.jsonl", "line 2", "json"]),
    "seeds-corrupt-parquet": (GEN, _local_seeds("corrupt.parquet"), ["corrupt.parquet", "parquet"]),
    "seeds-missing-field": (GEN, _local_seeds("missing_field.jsonl"), ["missing_field.jsonl", "golden_answers",
                                                                        "missing"]),
    "seeds-empty-question": (GEN, _local_seeds("empty_question.jsonl"), ["empty_question.jsonl", "question",
                                                                          "empty"]),
    "seeds-answers-not-a-list": (GEN, _local_seeds("answers_str.jsonl"), ["answers_str.jsonl", "golden_answers",
                                                                           "list"]),
    "seeds-non-utf8": (GEN, _local_seeds("latin1.jsonl"), ["latin1.jsonl", "utf-8"]),
    "seeds-1mb-question": (GEN, _local_seeds("huge_question.jsonl"), ["huge_question.jsonl", "question",
                                                                       "characters"]),
    "seeds-unsupported-file-type": (GEN, _local_seeds("seeds.csv"), ["seeds.csv", "unsupported"]),
    "recipe-unknown-key": (GEN, ["--config", "{bad}/unknown_key.yaml"], ["unknown_key.yaml", "bogus_key"]),
    "recipe-wrong-type": (GEN, ["--config", "{bad}/wrong_type.yaml"], ["wrong_type.yaml", "batch_size", "integer"]),
    "recipe-missing-file": (GEN, ["--config", "{bad}/no_such_recipe.yaml"], ["no_such_recipe.yaml", "not found"]),
    "recipe-invalid-yaml": (GEN, ["--config", "{bad}/invalid.yaml"], ["invalid.yaml", "yaml"]),
    "recipe-override-without-value": (GEN, ["judge.llm_judge"], ["judge.llm_judge", "key=value"]),
    "judge-endpoint-unreachable": (GEN, ["endpoint.base_url=http://127.0.0.1:{port}/v1", "judge.llm_judge=true"],
                                   ["endpoint: ", "127.0.0.1:{port}", "not reachable"]),
    "ask-endpoint-unreachable": (CLI, ["ask", "--llm-base-url", "http://127.0.0.1:{port}/v1", "--llm-model", "x",
                                       "--question", "q"], ["127.0.0.1:{port}", "not reachable"]),
    "ask-wrong-model": (CLI, ["ask", "--slm", "no-such-model", "--question", "q"], ["no-such-model",
                                                                                    "not a registry name"]),
    "ask-unknown-strategy": (CLI, ["ask", "--strategy", "telepathy", "--question", "q"], ["--strategy", "telepathy"]),
    "ask-bad-guard": (CLI, ["ask", "--guard", "sometimes", "--question", "q"], ["--guard", "sometimes"]),
    "sql-write": (CLI, ["sql", "DELETE FROM questions", "--store", "{store}"], ["read", "delete"]),
    "sql-syntax-error": (CLI, ["sql", "SELEC * FROM questions", "--store", "{store}"], ["selec", "syntax"]),
    "sql-missing-file": (CLI, ["sql", "{bad}/no_such_query.sql", "--store", "{store}"], ["no_such_query.sql",
                                                                                        "not found"]),
    "export-read-only-out": (CLI, ["export", "--out", "{readonly}/export", "--store", "{store}"],
                             ["{readonly_head}", "permi"]),
    "store-newer-schema": (CLI, ["sql", "SELECT count(*) FROM questions", "--store", "{newer}"],
                           ["newer.duckdb", "schema version 99", "newer"]),
    "store-not-duckdb": (CLI, ["stats", "--store", "{bad}/not_a_store.duckdb"], ["not_a_store.duckdb",
                                                                                 "not a valid duckdb"]),
    "store-missing": (CLI, ["stats", "--store", "{bad}/absent.duckdb"], ["absent.duckdb", "no such store"]),
    "sft-unknown-recipe-key": (SFT, ["--config", "{bad}/sft_unknown.yaml"], ["sft_unknown.yaml", "no_such_field"]),
    "rl-init-model-missing": (RL, ["--config", "{bad}/rl_no_model.yaml"], ["init_model", "no-such-sft-model"]),
}


@pytest.fixture
def bad_files(tmp_path, small_store):
    """The bad inputs, plus a copy of the small store from a newer schema version."""
    bad = tmp_path / "bad"
    bad.mkdir()
    good_row = json.dumps({"question": "What is the capital of Peru?", "golden_answers": ["Lima"]})
    (bad / "malformed.jsonl").write_text(good_row + "\n{\"question\": \"x\", golden_answers: [}\n")
    (bad / "corrupt.parquet").write_bytes(b"PAR1" + os.urandom(64) + b"not a footer")
    (bad / "missing_field.jsonl").write_text(json.dumps({"question": "Who?"}) + "\n")
    (bad / "empty_question.jsonl").write_text(json.dumps({"question": "   ", "golden_answers": ["a"]}) + "\n")
    (bad / "answers_str.jsonl").write_text(json.dumps({"question": "Who?", "golden_answers": "Ana"}) + "\n")
    (bad / "latin1.jsonl").write_bytes(good_row.encode() + b"\n" + '{"question": "Caf\u00e9?", "golden_answers":'
                                       ' ["x"]}\n'.encode("latin-1"))
    (bad / "huge_question.jsonl").write_text(json.dumps({"question": "why " * 262_144, "golden_answers": ["a"]}))
    (bad / "seeds.csv").write_text("question,golden_answers\nWho?,Ana\n")
    sane = f"store: {small_store}\nshards: {tmp_path / 'shards'}\n"
    (bad / "unknown_key.yaml").write_text(sane + "bogus_key: 1\n")
    (bad / "wrong_type.yaml").write_text(sane + "batch_size: lots\n")
    (bad / "invalid.yaml").write_text(sane + "seeds: {kind: offline\n  - : [\n")
    (bad / "not_a_store.duckdb").write_text("this is not a DuckDB file\n")
    (bad / "sft_unknown.yaml").write_text("model_name_or_path: smollm2-135m\noutput_dir: "
                                          f"{tmp_path / 'sft-out'}\nno_such_field: 3\n")
    (bad / "rl_no_model.yaml").write_text(f"store: {small_store}\ninit_model: {tmp_path / 'no-such-sft-model'}\n"
                                          f"output_dir: {tmp_path / 'rl-out'}\n")
    newer = tmp_path / "newer" / "newer.duckdb"
    newer.parent.mkdir()
    newer.write_bytes(small_store.read_bytes())
    con = duckdb.connect(str(newer))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    if os.access(readonly, os.W_OK):  # root ignores permission bits: use a folder no one may create files in
        readonly = "/sys/seekhelp-reliability"
    return {"bad": bad, "store": small_store, "newer": newer, "readonly": readonly,
            "readonly_head": Path(readonly).name, "port": free_port()}


def _fill(text: str, values: dict) -> str:
    for k, v in values.items():
        text = text.replace("{" + k + "}", str(v))
    return text


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_clear_line_and_changes_nothing(case, bad_files, tmp_path):
    module, argv, words = CASES[case]
    argv = [_fill(a, bad_files) for a in argv]
    if module == GEN and not argv[0].startswith("--config"):  # overrides of the demo recipe, into temp paths
        argv = generate_args(bad_files["store"], tmp_path / "shards", *argv, config=DEMO_RECIPE)
    watched = [bad_files["store"].parent, bad_files["newer"].parent, bad_files["bad"]]
    before = [folder_state(d) for d in watched]

    res = run_module(module, *argv, timeout=120)

    assert res.returncode != 0, f"{case}: exit 0\n{res.stderr[-2000:]}"
    assert "Traceback" not in res.stderr, f"{case}: traceback\n{res.stderr[-3000:]}"
    errors = [line for line in res.stderr.splitlines() if ERROR_LINE.match(line)]
    assert len(errors) == 1, f"{case}: expected one error line, got {errors}\n{res.stderr[-2000:]}"
    line = errors[0].lower()
    for w in words:
        assert _fill(w, bad_files).lower() in line, f"{case}: {_fill(w, bad_files)!r} not in {errors[0]!r}"
    assert [folder_state(d) for d in watched] == before, f"{case}: a store or input file changed"
    assert not (tmp_path / "shards").exists(), f"{case}: shards were written"
    assert not (tmp_path / "sft-out").exists() and not (tmp_path / "rl-out").exists()
