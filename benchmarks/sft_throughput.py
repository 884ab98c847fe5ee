"""Training tokens per second of our sft/train.py vs a plain TRL SFTTrainer (same data, model and settings).

    python -m benchmarks.sft_throughput --steps 10 [--model data/models/smollm2-135m] [--dataset auto|synthetic|DIR]

Both runs take their SFTConfig from the same recipe (`--recipe`, the CPU demo by default) and the same overrides
(steps, batch, max length), so they share the optimiser, the length-grouped sampler and its seed, the chat template
with generation markers and `assistant_only_loss=True`: the loss is on the SLM's tokens in both. Ours runs end to
end through `sft.train.train` (model resolution, dataset checks, tokenizer preparation, training, saving the model,
recipe and model card); the baseline is `SFTTrainer(model=path, args=config, train_dataset=messages)`, then
`save_model`. Tokens are the non-padding input tokens the trainer counted (`include_num_input_tokens_seen`);
tokens/s is over the training loop (first step to last), wall_s over everything. Dataset caching is off, so both
tokenize from scratch. The baseline runs first. Data: the demo export (data/exports/sft/smollm2-135m-demo) when
present, else 32 synthetic dialogues. Prints one JSON line.
"""

import argparse
import contextlib
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_EXPORT = ROOT / "data/exports/sft/smollm2-135m-demo"


def synthetic_dialogues(out: Path, n: int = 32) -> str:
    import datasets

    from seekhelp.prompts import load_prompt
    from seekhelp.protocol import render_agent_reply, render_slm_turn

    places = [("Bergen", "Norway"), ("Kumasi", "Ghana"), ("Arequipa", "Peru"), ("Sapporo", "Japan")]
    rows = []
    for i in range(n):
        city, country = places[i % len(places)]
        user = f"My aunt no. {i} retired to {city}. In which country does she live now?"
        turns = [{"role": "assistant", "content": render_slm_turn("I should check.", "message", f"Where is {city}?")},
                 {"role": "user", "content": render_agent_reply("information", f"{city} is a city in {country}.")},
                 {"role": "assistant", "content": render_slm_turn("The expert placed it.", "answer", country)}]
        rows.append([{"role": "system", "content": load_prompt("slm_dynamic")}, {"role": "user", "content": user},
                     *turns[(i % 3 == 0) * 2:]])  # every third dialogue answers alone
    datasets.Dataset.from_dict({"messages": rows}).save_to_disk(str(out))
    return str(out)


def timer():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        losses: list

        def __init__(self):
            self.losses = []  # (step, logged training loss)

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append((state.global_step, logs["loss"]))

        def on_train_end(self, args, state, control, **kw):
            self.seconds, self.tokens, self.steps = time.perf_counter() - self.t0, state.num_input_tokens_seen, \
                state.global_step

    return Timer()


def run_ours(argv: list[str]) -> tuple[object, float]:
    import sft.train as ours

    clock, build = timer(), ours.build_trainer

    def build_and_time(*a, **kw):
        trainer = build(*a, **kw)
        trainer.args.include_num_input_tokens_seen = "non_padding"  # the CLI only takes true/false ("all")
        trainer.add_callback(clock)
        return trainer

    ours.build_trainer = build_and_time  # only to attach the clock and the counter; train() runs unchanged
    try:
        t0 = time.perf_counter()
        ours.train(*ours.parse(argv))
        return clock, time.perf_counter() - t0
    finally:
        ours.build_trainer = build


def run_trl(argv: list[str], model: str, dataset: str) -> tuple[object, float]:
    import datasets
    from trl import SFTTrainer

    from seekhelp.models import resolve
    from sft.train import parse

    _, config, model_args = parse(argv)  # the same SFTConfig our run gets
    config = copy.deepcopy(config)
    config.model_init_kwargs = {"dtype": model_args.dtype} if model_args.dtype else None
    config.include_num_input_tokens_seen = "non_padding"
    clock = timer()
    t0 = time.perf_counter()
    data = datasets.load_from_disk(dataset).select_columns(["messages"])
    trainer = SFTTrainer(model=resolve(model), args=config, train_dataset=data, callbacks=[clock])
    trainer.train()
    trainer.save_model(config.output_dir)
    return clock, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Tokens/s of sft/train.py vs plain TRL SFTTrainer.")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--model", default="data/models/smollm2-135m")
    ap.add_argument("--dataset", default="auto", help="auto (demo export if present), synthetic, or a dataset folder")
    ap.add_argument("--recipe", default=str(ROOT / "sft/recipes/smollm2-135m/demo.yaml"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=1024)
    args = ap.parse_args(argv)
    import datasets

    datasets.disable_caching()
    with tempfile.TemporaryDirectory(prefix="seekhelp-bench-") as tmp:
        data = args.dataset
        if data == "synthetic" or (data == "auto" and not DEMO_EXPORT.is_dir()):
            data = synthetic_dialogues(Path(tmp, "dialogues"))
        elif data == "auto":
            data = str(DEMO_EXPORT)

        def argv_for(name: str) -> list[str]:
            return ["--config", args.recipe, "--model_name_or_path", args.model, "--store", "", "--dataset_path", data,
                    "--output_dir", str(Path(tmp, name)), "--max_steps", str(args.steps),
                    "--per_device_train_batch_size", str(args.batch), "--max_length", str(args.max_length),
                    "--chat_template_path", str(ROOT / "sft/chat_templates/chatml_generation.jinja"),
                    "--logging_steps", str(args.steps),
                    "--disable_tqdm", "true", "--report_to", "none", "--save_strategy", "no"]

        with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs; stdout is for the JSON line
            trl, trl_wall = run_trl(argv_for("trl"), args.model, data)
            ours, ours_wall = run_ours(argv_for("ours"))
    rate = {k: c.tokens / c.seconds for k, c in (("ours", ours), ("trl", trl))}
    out = {"figure": "sft_throughput", "machine": platform.processor() or platform.machine(), "model": args.model,
           "dataset": "synthetic" if data.startswith(tmp) else data, "steps": ours.steps, "batch": args.batch,
           "max_length": args.max_length, "assistant_only_loss": True,
           "ours_tokens": ours.tokens, "trl_tokens": trl.tokens,
           "ours_tokens_per_s": round(rate["ours"], 1), "trl_tokens_per_s": round(rate["trl"], 1),
           "ours_vs_trl": round(rate["ours"] / rate["trl"], 3),
           "ours_train_s": round(ours.seconds, 2), "trl_train_s": round(trl.seconds, 2),
           "ours_wall_s": round(ours_wall, 2), "trl_wall_s": round(trl_wall, 2),
           "wall_ratio": round(ours_wall / trl_wall, 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
