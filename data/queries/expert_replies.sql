-- How well the LLM answers each request wording: every reply with information, grouped by the request with the
-- place it names masked as {s}, and the share of replies that carry a gold alias of the fact asked. A policy can
-- only be as right as its expert's replies; with the grounded 135M expert they differ by wording ("Which currency
-- is legal tender in {s}?" against "What is the official currency of {s}?"), which is what to read before choosing
-- the request wordings a teacher writes.
--   seekhelp sql data/queries/expert_replies.sql --format csv [--param split=train --param min_n=10]
-- A reply counts for every hop of the question whose subject the request names (a two-hop request in one message
-- counts for both hops; a request that names no hop's subject is left out).
-- @param split = 'validation'      -- '*' for every split
-- @param strategy = 'dynamic'      -- '*' for every strategy
-- @param min_n = 1                 -- wordings seen fewer times are left out
WITH replies AS (
    SELECT u.sent AS request, u.content AS reply,
           unnest(from_json(json_extract(q.meta, '$.hops'),
                            '[{"relation": "VARCHAR", "subject": "VARCHAR", "answers": ["VARCHAR"]}]')) AS hop
    FROM turns u
    JOIN trajectories t ON t.id = u.trajectory_id
    JOIN questions q ON q.id = t.question_id
    WHERE u.role = 'llm' AND u.action = 'information' AND u.sent IS NOT NULL
      AND ($split = '*' OR q.split = $split)
      AND ($strategy = '*' OR t.strategy = $strategy)
)
SELECT hop.relation AS relation,
       replace(request, hop.subject, '{s}') AS wording,
       count(*) AS n,
       round(100 * avg(CASE WHEN len(list_filter(hop.answers, lambda a: contains(lower(reply), lower(a)))) > 0
                            THEN 1 ELSE 0 END), 1) AS answered_pct
FROM replies
WHERE hop.subject IS NOT NULL AND contains(request, hop.subject)
GROUP BY ALL
HAVING count(*) >= $min_n
ORDER BY relation, n DESC, wording;
