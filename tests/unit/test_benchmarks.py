"""The benchmark scripts at toy sizes: each prints one JSON line with its figures, all of them positive."""

import json

import pytest


def _json_line(capsys) -> dict:
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def _positive(out: dict, keys: list[str]) -> None:
    for k in keys:
        assert isinstance(out[k], int | float) and out[k] > 0, (k, out[k])


def test_store_ingest_tiny(capsys):
    from benchmarks.store_ingest import main

    main(["--turns", "2000", "--shard-trajectories", "250", "--repeat", "2"])
    out = _json_line(capsys)
    assert out["figure"] == "store_ingest"
    assert 1900 <= out["turns"] <= 2100 and out["trajectories"] == 500 and out["judgments"] == 500 * 10
    _positive(out, ["write_shards_s", "ingest_shards_s", "plain_load_s", "ingest_vs_plain", "ingest_peak_rss_mb",
                    "plain_peak_rss_mb", "shards_total_s", "add_trajectories_s", "turns_per_s", "stats_s",
                    "sft_candidates_s", "rs_select_s", "stats_rows", "sft_candidates_rows", "rs_select_rows",
                    "store_mb", "direct_vs_shards"])
    assert out["shards"] == 3 * 3  # 125 questions in batches of 62: three batches of three shards each
    for flag in ("ingest_target_met", "queries_target_met", "ingest_vs_plain_met"):
        assert isinstance(out[flag], bool)


def test_llm_orchestration_tiny(capsys):
    from benchmarks.llm_orchestration import main

    main(["--episodes", "20", "--batch-size", "8"])
    out = _json_line(capsys)
    assert out["figure"] == "llm_orchestration" and out["episodes"] == 20 and out["llm_calls_per_episode"] == 2
    # warm-ups of 4 episodes, then 20 episodes, each through the runtime and through the teacher step
    assert out["llm_requests"] == 2 * 2 * (4 + 20) and out["slm_requests"] == 3 * (4 + 20)
    _positive(out, ["runtime_episodes_per_s", "runtime_llm_calls_per_s", "runtime_wall_s",
                    "teacher_step_episodes_per_s", "teacher_step_wall_s", "runtime_vs_teacher_step"])


@pytest.mark.filterwarnings("ignore")
def test_sft_throughput_tiny(capsys, tiny_model_dir):
    from benchmarks.sft_throughput import main

    main(["--model", tiny_model_dir, "--dataset", "synthetic", "--steps", "2", "--batch", "1"])
    out = _json_line(capsys)
    assert out["figure"] == "sft_throughput" and out["steps"] == 2 and out["assistant_only_loss"] is True
    assert out["ours_tokens"] == out["trl_tokens"]  # same data, same sampler, same seed
    _positive(out, ["ours_tokens", "ours_tokens_per_s", "trl_tokens_per_s", "ours_vs_trl", "ours_train_s",
                    "trl_train_s", "ours_wall_s", "trl_wall_s", "wall_ratio"])


def test_rollouts_tiny(capsys, tiny_model_dir):
    from benchmarks.rollouts import main

    main(["--slm", tiny_model_dir, "--sizes", "1,3", "--max-new-tokens", "6"])
    out = _json_line(capsys)
    assert out["figure"] == "rollouts" and [r["episodes"] for r in out["sizes"]] == [1, 3]
    for row in out["sizes"]:
        _positive(row, ["batched_eps_per_min", "one_at_a_time_eps_per_min", "speedup", "slm_turns", "slm_tokens"])
    assert out["raw_generate"]["episodes"] == 3
    _positive(out, ["runtime_tokens_per_s", "efficiency_vs_raw_generate"])


def test_rollout_engine_tiny(capsys, tiny_model_dir):
    from benchmarks.rollout_engine import main

    main(["--slm", tiny_model_dir, "--sizes", "3", "--batch", "2", "--max-new-tokens", "5"])
    out = _json_line(capsys)
    assert out["figure"] == "rollout_engine" and [(r["mode"], r["episodes"]) for r in out["rows"]] == \
        [("replay", 3), ("runtime", 3)]
    for row in out["rows"]:
        assert row["same_texts"] == 3  # greedy: both engines write the same turns
        _positive(row, ["ceiling_tokens_per_s", "slots_vs_static_episodes_per_s"])
        for engine in ("static", "slots"):
            _positive(row[engine], ["episodes_per_s", "slm_tokens_per_s", "vs_ceiling", "slm_turns"])
    replay = out["rows"][0]
    assert replay["slots"]["slm_turns"] == 2 + 3 + 2 and replay["slots"]["stats"]["turn_cache_hits"] >= 4


def test_serve_tiny(capsys, tiny_model_dir):
    from benchmarks.serve import main

    main(["--slm", tiny_model_dir, "--requests", "6", "--sequential", "2", "--clients", "3", "--max-new-tokens", "6",
          "--rounds", "2"])
    out = _json_line(capsys)
    assert out["figure"] == "serve" and out["one_at_a_time"]["requests"] == 2 and out["concurrent"]["requests"] == 6
    for phase in ("one_at_a_time", "concurrent"):
        _positive(out[phase], ["wall_s", "requests_per_s", "cpu_s_per_request", "p50_s", "p95_s", "mean_batch"])
        assert sum(out[phase]["stop_reasons"].values()) == out[phase]["requests"]
    assert out["one_at_a_time"]["mean_batch"] == 1 and out["target_met"] is None
    _positive(out, ["speedup", "cpu_speedup", "slm_generate_calls", "slm_episode_turns"])


def test_round_cost_tiny(capsys):
    """The simulated GPU round: a client capped below the servers' capacity waits wave after wave."""
    from benchmarks.round_cost import main

    main(["--episodes", "24", "--round-episodes", "100", "--capacity", "32", "--time-scale", "0.01",
          "--concurrency", "4", "32"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    slow, fast = out["settings"]["4"], out["settings"]["32"]
    assert slow["wall_s_simulated"] > fast["wall_s_simulated"] and out["speedup_last_vs_first"] > 1
    assert out["round_hours_at_full_capacity"] <= fast["round_hours"]


@pytest.mark.filterwarnings("ignore")
def test_sft_batching_tiny(capsys, tiny_model_dir, tmp_path):
    from benchmarks.sft_batching import main
    from benchmarks.sft_throughput import synthetic_dialogues

    main(["--model", tiny_model_dir, "--dataset", synthetic_dialogues(tmp_path / "d", n=16), "--steps", "2"])
    out = _json_line(capsys)
    one, four = out["batch1_accum4"], out["batch4_accum1"]
    assert out["figure"] == "sft_batching" and len(one["losses"]) == len(four["losses"]) == 2
    assert one["tokens"] == four["tokens"] > 0  # the same dialogues in the same steps
    assert out["max_abs_loss_diff"] < 0.05  # the same optimiser steps, up to rounding and padding
    _positive(out, ["speedup"])
