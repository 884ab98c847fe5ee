-- Failed dialogues of one policy on the test split, with each turn (SLM request / LLM reply / SLM answer) on one line.
-- Edit the slm pattern to look at another model:  seekhelp sql data/queries/failures.sql --format csv
SELECT s.id, json_extract_string(q.meta, '$.kind') AS kind, q.question, s.final_answer, q.answers[1] AS gold,
       (SELECT string_agg(u.role || ': ' || left(u.content, 120), ' | ' ORDER BY u.idx) FROM turns u
        WHERE u.trajectory_id = s.id) AS dialogue
FROM scored s JOIN questions q ON q.id = s.question_id
WHERE s.strategy = 'dynamic' AND s.slm LIKE '%round-2' AND s.split = 'test' AND s.em = 0 AND s.round = 0
ORDER BY kind, s.id LIMIT 3
