-- SFT candidates: for every question, the one dialogue worth imitating.
--
-- A trajectory qualifies when it
--   * got the answer right (exact match with a gold alias),
--   * leaked nothing (no leak verdict counts as no leak: judge first if that matters),
--   * kept to the protocol and ended with an answer (not n_max, an error or the guard),
--   * never sent the private question itself to the LLM.
-- Among the qualifying trajectories of a question the one with the fewest LLM turns wins, then the one
-- with the fewest tokens, then the smaller id (so the choice is deterministic).
-- Except for the kinds in `one_request_per_hop` (meta.kind; two-hop questions by default): there the dialogue with
-- the most LLM turns wins, one request per hop. Measured on the demo with fewest-turns for every kind: 46 of 60
-- two-hop questions kept the one combined request, and on test the SFT model sent one combined request on every
-- two-hop question; the 135M expert answered only its first hop (EM 12 %), and the model never asked again.
-- A hop per request is what a small expert can answer, and the dialogue teaches to ask again after a reply.
-- '' turns the exception off (a strong LLM answers a combined request; fewer calls cost less).
-- A question answered without asking (no LLM turn) may keep up to `alone_dialogues` of its dialogues, to weigh
-- the minority decision up (1.5: two for half of those questions, drawn by question id, one for the rest). Measured on the demo (SmolLM2-135M, one epoch): with length-grouped batches the choice
-- followed the data (1: asked on every test question; 2: answered alone on every one); with the recipes' shuffled
-- steps, 1 sets it right on 70 of 70 test questions, so the recipes keep 1. Read again on the slot-family questions
-- (480 training questions, three SFT seeds each, 120 validation questions): 2 raised self-contained answered alone
-- from 76.4 to 95.8 % and lowered needs-a-fact asked from 95.8 to 93.4 % (pooled -2.4 [-4.9, -0.3]); 1 stays.
--
-- Parameters (DuckDB named parameters; `seekhelp sql sft_candidates --param split=test` overrides them).
-- '*' means "any".
-- @param split = 'train'
-- @param strategy = '*'
-- @param alone_dialogues = 1
-- @param one_request_per_hop = 'two_hop'   -- comma-separated kinds
--
-- The query must return a `trajectory_id` column: `seekhelp export` rebuilds each dialogue from it.
SELECT
    s.id AS trajectory_id,
    s.question_id,
    s.strategy,
    s.split,
    s.source,
    s.n_turns,
    s.total_tokens,
    s.final_answer
FROM scored s
LEFT JOIN questions q ON q.id = s.question_id
WHERE s.em = 1
  AND coalesce(s.leak, 0) = 0
  AND s.format_ok
  AND s.stop_reason = 'answer'
  AND NOT coalesce(s.raw_question_sent, false)
  AND ($split = '*' OR s.split = $split)
  AND ($strategy = '*' OR s.strategy = $strategy)
QUALIFY row_number() OVER (
            PARTITION BY s.question_id
            ORDER BY CASE WHEN list_contains(string_split($one_request_per_hop, ','), json_extract_string(q.meta, '$.kind'))
                          THEN -s.n_turns ELSE s.n_turns END,
                     s.total_tokens, s.id)
        <= CASE WHEN s.n_turns > 0 THEN 1
                -- a fraction: the next dialogue for that share of the questions, drawn by question id (md5)
                ELSE floor($alone_dialogues)::INTEGER
                     + CASE WHEN ('0x' || substr(md5(s.question_id), 1, 6))::INTEGER / 16777216.0
                                 < $alone_dialogues - floor($alone_dialogues) THEN 1 ELSE 0 END END
ORDER BY s.question_id;
