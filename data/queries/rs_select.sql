-- Rejection sampling: from the rollouts of one RL round, keep per question the best-rewarded trajectory.
--
-- `reward` is the total reward R stored as the judgment named "reward". Rollouts without a reward are
-- ignored. Ties on reward go to fewer LLM turns, then fewer tokens, then the smaller id.
--
-- @param round = -1          -- -1 = the latest round found in the store
-- @param min_reward = 0.5    -- keep only rollouts with reward >= this
-- @param split = 'train'     -- '*' = any split
-- @param policy = '*'        -- the SLM that sampled the rollouts (the RL loop passes its policy, so two RL runs
--                               sharing one store and round numbers never mix); '*' = any
WITH target AS (
    SELECT CASE WHEN $round < 0 THEN (SELECT max(round) FROM trajectories) ELSE $round END AS round
)
SELECT
    s.id AS trajectory_id,
    s.question_id,
    s.round,
    s.reward,
    s.em,
    s.leak,
    s.n_turns,
    s.total_tokens
FROM scored s
JOIN target t ON s.round = t.round
WHERE s.reward IS NOT NULL
  AND s.reward >= $min_reward
  AND ($split = '*' OR s.split = $split)
  AND ($policy = '*' OR s.slm = $policy)
QUALIFY row_number() OVER (PARTITION BY s.question_id ORDER BY s.reward DESC, s.n_turns, s.total_tokens, s.id) = 1
ORDER BY s.question_id;
