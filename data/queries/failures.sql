-- Failed dialogues of one policy on the test split, one per question kind, each turn (SLM request / LLM reply /
-- SLM answer) on one line; the transfer run (same SLM, another LLM) is left out by `llm`:
--   seekhelp sql data/queries/failures.sql --format csv [--param slm=%sft/smollm2-135m-demo]
-- @param slm = '%rl/smollm2-135m-demo/round-2'   -- a LIKE pattern on the SLM path
-- @param llm = 'smollm2-135m'
SELECT s.id, json_extract_string(q.meta, '$.kind') AS kind, q.question, s.final_answer, q.answers[1] AS gold,
       s.n_turns AS llm_calls,
       (SELECT string_agg(u.role || ': ' || left(u.content, 160), ' | ' ORDER BY u.idx) FROM turns u
        WHERE u.trajectory_id = s.id) AS dialogue
FROM scored s JOIN questions q ON q.id = s.question_id
WHERE s.strategy = 'dynamic' AND s.slm LIKE $slm AND s.llm = $llm AND s.split = 'test' AND s.em = 0
  AND s.round = 0
QUALIFY row_number() OVER (PARTITION BY kind ORDER BY s.id) = 1
ORDER BY kind
