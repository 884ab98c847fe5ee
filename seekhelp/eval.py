"""`make eval`: strategies × datasets → per-run metrics in the store → report.md with PNG plots.

    python -m seekhelp.eval --config evals/demo.yaml [--set limit=10 --set judge.llm_judge=false ...]
    seekhelp eval --config evals/demo.yaml

The recipe (seekhelp/evaluation/recipe.py) names the store, the datasets (filters over the store's questions),
the LLM endpoints, the runs (strategy × SLM × endpoint × guard), the transfer runs (a trained SLM against an
LLM it never saw), the price table, the judge and the BERTScore encoder. Trajectories and verdicts go into the
store, one row per run and dataset into `eval_metrics` (eval_id = hash of the recipe: a rerun replaces its rows),
and the report into <reports_dir>/<name>/report.md, whose path is printed last.
"""

import argparse
import json
import logging
import os
import sys

from seekhelp.errors import entry_point


@entry_point
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="seekhelp eval", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="eval recipe (YAML), e.g. evals/demo.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "openai", "urllib3", "transformers", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from seekhelp.evaluation import recipe as recipes

    recipe = recipes.load(args.config, args.set)
    if args.quiet:
        recipe.progress = False
    from seekhelp.evaluation.harness import run_eval  # late: a bad recipe fails before torch is imported

    result = run_eval(recipe)
    print(json.dumps(result))
    print(f"report: {result['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
