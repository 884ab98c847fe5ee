-- SFT candidates: for every question, the one dialogue worth imitating.
--
-- A trajectory qualifies when it
--   * got the answer right (exact match with a gold alias),
--   * leaked nothing (no leak verdict counts as no leak: judge first if that matters),
--   * kept to the protocol and ended with an answer (not n_max, an error or the guard),
--   * never sent the private question itself to the LLM.
-- Among the qualifying trajectories of a question the one with the fewest LLM turns wins, then the one
-- with the fewest tokens, then the smaller id (so the choice is deterministic).
-- A question answered without asking (no LLM turn) may keep up to `alone_dialogues` of its dialogues, to weigh
-- the minority decision up. Measured on the demo (SmolLM2-135M, one epoch): with length-grouped batches the choice
-- followed the data (1: asked on every test question; 2: answered alone on every one); with the recipes' shuffled
-- steps, 1 sets it right on 70 of 70 test questions, so the recipes keep 1.
--
-- Parameters (DuckDB named parameters; `seekhelp sql sft_candidates --param split=test` overrides them).
-- '*' means "any".
-- @param split = 'train'
-- @param strategy = '*'
-- @param alone_dialogues = 1
--
-- The query must return a `trajectory_id` column: `seekhelp export` rebuilds each dialogue from it.
SELECT
    id AS trajectory_id,
    question_id,
    strategy,
    split,
    source,
    n_turns,
    total_tokens,
    final_answer
FROM scored
WHERE em = 1
  AND coalesce(leak, 0) = 0
  AND format_ok
  AND stop_reason = 'answer'
  AND NOT coalesce(raw_question_sent, false)
  AND ($split = '*' OR split = $split)
  AND ($strategy = '*' OR strategy = $strategy)
QUALIFY row_number() OVER (PARTITION BY question_id ORDER BY n_turns, total_tokens, id)
        <= CASE WHEN n_turns = 0 THEN $alone_dialogues ELSE 1 END
ORDER BY question_id;
