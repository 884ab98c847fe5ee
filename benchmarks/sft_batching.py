"""Seconds per optimizer step of the demo's SFT with one dialogue per forward (batch 1, 4 accumulated) against 4
dialogues per forward (batch 4, padded), and the losses each logged.

    python -m benchmarks.sft_batching --steps 12 [--model data/models/smollm2-135m] [--dataset DIR]

Both arms run end to end through `sft.train` with the demo recipe (`sft/recipes/smollm2-135m/demo.yaml`), the same
data, seed and 4 dialogues per step. The trainer normalises the loss by the label tokens of the whole step
(`num_items_in_batch`), and the shuffled sampler draws the same order for both, so the two arms take the same
steps up to float rounding and padding: the logged losses show how close. Arms run one after the other (batch 1
first); s/step is over the training loop only. Data: `--dataset`, else the demo export when present, else the
recipe's query exported from its store by the first arm (`make data` first). Prints one JSON line.
"""

import argparse
import contextlib
import json
import platform
import sys
import tempfile
from pathlib import Path

from benchmarks.sft_throughput import DEMO_EXPORT, ROOT, run_ours

ARMS = {"batch1_accum4": (1, 4), "batch4_accum1": (4, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="s/step of the demo SFT at batch 1 x 4 accumulated vs batch 4 x 1.")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dataset", default=str(DEMO_EXPORT) if DEMO_EXPORT.is_dir() else None)
    ap.add_argument("--recipe", default=str(ROOT / "sft/recipes/smollm2-135m/demo.yaml"))
    args = ap.parse_args(argv)
    if args.dataset and not Path(args.dataset).is_dir():
        sys.exit(f"--dataset: {args.dataset} is not an export folder")
    out = {"figure": "sft_batching", "machine": platform.processor() or platform.machine(), "model": args.model,
           "dataset": args.dataset or "exported", "steps": args.steps}
    with tempfile.TemporaryDirectory(prefix="seekhelp-bench-") as tmp, contextlib.redirect_stdout(sys.stderr):
        data = args.dataset or str(Path(tmp, "export"))
        for name, (batch, accum) in ARMS.items():
            source = ["--store", ""] if Path(data).is_dir() else []  # else the recipe's store, exported into data
            clock, wall = run_ours(["--config", args.recipe, "--model_name_or_path", args.model, *source,
                                    "--dataset_path", data, "--output_dir", str(Path(tmp, name)),
                                    "--max_steps", str(args.steps), "--per_device_train_batch_size", str(batch),
                                    "--gradient_accumulation_steps", str(accum), "--logging_steps", "1",
                                    "--disable_tqdm", "true", "--report_to", "none", "--save_strategy", "no"])
            out[name] = {"s_per_step": round(clock.seconds / clock.steps, 3), "train_s": round(clock.seconds, 2),
                         "wall_s": round(wall, 2), "tokens": clock.tokens,
                         "losses": [round(loss, 4) for _, loss in clock.losses]}
    a, b = (out[k] for k in ARMS)
    out["speedup"] = round(a["s_per_step"] / b["s_per_step"], 3)
    out["max_abs_loss_diff"] = round(max(abs(x - y) for x, y in zip(a["losses"], b["losses"], strict=True)), 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
