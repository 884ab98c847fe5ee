-- Headline numbers per source / split / strategy (percentages are over judged trajectories only:
-- a trajectory without an `em` verdict does not count toward EM, one without a leak verdict not toward leaks).
SELECT
    coalesce(source, '?') AS source,
    coalesce(split, '?') AS split,
    strategy,
    count(*) AS n,
    count(em) AS n_judged,
    round(100 * avg(em), 2) AS em_pct,
    round(100 * avg(f1), 2) AS f1_pct,
    round(avg(n_turns), 3) AS avg_turns,
    round(100 * avg(CASE WHEN leak > 0 THEN 1.0 WHEN leak IS NOT NULL THEN 0.0 END), 2) AS leak_pct,
    round(100 * avg(CASE WHEN format_ok THEN 1.0 ELSE 0.0 END), 2) AS format_ok_pct,
    round(avg(slm_tokens), 1) AS avg_slm_tokens,
    round(avg(llm_tokens), 1) AS avg_llm_tokens
FROM scored
GROUP BY ALL
ORDER BY source, split, strategy;
