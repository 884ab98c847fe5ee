"""distilabel Steps of the data pipeline: teacher dialogues, deterministic judges, parquet shard writer.

Rows carry records as JSON strings (`question_json`, `trajectories_json`, `judgments_json`) so distilabel's
batching never has to infer nested Arrow schemas. Steps never write the DuckDB file: they write parquet shards and
one process ingests them. (Annotations stay eagerly evaluated: distilabel inspects the signatures.)
"""

import json
from typing import Any

from distilabel.steps import Step, StepInput

from seekhelp.records import Question, Trajectory


def teacher_runtime_trajectories(questions: list[Question], cfg: dict[str, Any]) -> list[Trajectory]:
    """Dialogues from real teacher models in both roles (any OpenAI-compatible endpoints) through the runtime."""
    from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend
    from seekhelp.runtime import Runtime, RuntimeConfig

    slm = OpenAIBackend(EndpointConfig(**cfg["slm_endpoint"]))
    llm = OpenAIBackend(EndpointConfig(**cfg["llm_endpoint"]))
    grounder = None
    if cfg.get("ground"):
        from seekhelp.knowledge import KnowledgeBase
        from seekhelp.knowledge import grounder as make_grounder

        grounder = make_grounder(KnowledgeBase.from_geonames(), k=3)
    rt = Runtime(slm, llm, RuntimeConfig(n_max=cfg.get("n_max", 4), slm_temperature=cfg.get("temperature", 0.7),
                                         slm_max_new_tokens=cfg.get("slm_max_new_tokens", 256),
                                         llm_max_new_tokens=cfg.get("llm_max_new_tokens", 256), guard="block"),
                 grounder=grounder)
    out: list[Trajectory] = []
    for i in range(cfg.get("samples", 1)):
        rt.config.seed = cfg.get("seed", 0) + i
        out.extend(rt.run(questions, strategy="teacher", sample_index=i))
    return out


class TeacherDialogues(Step):
    """N teacher dialogues per question: the knowledge-driven teacher (offline) or real models via the runtime."""

    teacher: str = "knowledge"  # knowledge | runtime
    samples: int = 2
    seed: int = 0
    runtime_config: dict | None = None  # for teacher=runtime: slm/llm base urls and models, temperature, n_max

    @property
    def inputs(self) -> list[str]:
        return ["question_json"]

    @property
    def outputs(self) -> list[str]:
        return ["trajectories_json", "teacher_error"]

    def process(self, inputs: StepInput):  # type: ignore[override]
        questions = [Question.from_dict(json.loads(r["question_json"])) for r in inputs]
        try:
            if self.teacher == "knowledge":
                from pipelines.offline_teacher import teach

                trajs = teach(questions, n=self.samples, seed=self.seed)
            else:
                trajs = teacher_runtime_trajectories(questions, {**(self.runtime_config or {}),
                                                                 "samples": self.samples, "seed": self.seed})
            error = None
        except Exception as e:  # a failed batch is recorded per row, never dropped silently
            trajs, error = [], f"{type(e).__name__}: {e}"
        by_q: dict[str, list[dict]] = {}
        for t in trajs:
            by_q.setdefault(t.question_id, []).append(t.to_dict())
        for row, q in zip(inputs, questions, strict=True):
            row["trajectories_json"] = json.dumps(by_q.get(q.id, []), ensure_ascii=False)
            row["teacher_error"] = error if error or by_q.get(q.id) else "no dialogue produced"
        yield inputs


class DeterministicJudges(Step):
    """Answer correctness (normalized EM over aliases, F1) and the deterministic privacy detector."""

    @property
    def inputs(self) -> list[str]:
        return ["question_json", "trajectories_json"]

    @property
    def outputs(self) -> list[str]:
        return ["judgments_json"]

    def process(self, inputs: StepInput):  # type: ignore[override]
        for row in inputs:
            q = Question.from_dict(json.loads(row["question_json"]))
            from seekhelp.judging import deterministic_judgments

            rows = []
            for d in json.loads(row["trajectories_json"] or "[]"):
                rows.extend(deterministic_judgments(q, Trajectory.from_dict(d)))
            row["judgments_json"] = json.dumps(rows)
        yield inputs


class WriteShards(Step):
    """Write each batch's trajectories, judgments and failures as parquet shards (atomic files)."""

    shard_dir: str
    run_id: str | None = None

    @property
    def inputs(self) -> list[str]:
        return ["question_json", "trajectories_json", "judgments_json", "teacher_error"]

    @property
    def outputs(self) -> list[str]:
        return ["n_trajectories"]

    def process(self, inputs: StepInput):  # type: ignore[override]
        from seekhelp.store.ingest import write_shard

        trajs, judgments, failures = [], [], []
        for row in inputs:
            batch = json.loads(row["trajectories_json"] or "[]")
            trajs.extend(batch)
            judgments.extend(json.loads(row["judgments_json"] or "[]"))
            if not batch:
                qid = json.loads(row["question_json"])["id"]
                failures.append({"item_id": qid, "stage": "teacher", "reason": row["teacher_error"] or "empty"})
            row["n_trajectories"] = len(batch)
        # judgments before trajectories: a rerun skips questions whose trajectories are stored, so a kill between
        # the two files must never leave trajectories without their judgments (the reverse is redone and upserted)
        if judgments:
            write_shard(self.shard_dir, "judgments", judgments, self.run_id)
        if failures:
            write_shard(self.shard_dir, "failures", failures, self.run_id)
        if trajs:
            write_shard(self.shard_dir, "trajectories", trajs, self.run_id)
        yield inputs
