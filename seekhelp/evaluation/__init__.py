"""The evaluation harness: strategies × datasets → metrics in the store → report.md with plots.

Entry point: `python -m seekhelp.eval --config evals/demo.yaml` (or `seekhelp eval --config ...`).
Modules: recipe (YAML schema and checks), harness (endpoints, SLMs, runs, store), aggregate (metrics from
trajectories), embeddings (F_BERT / Priv_sim encoder), report (report.md), plots (PNG figures).
"""
