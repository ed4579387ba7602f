;; Self-consistency (Wang et al. 2022): sample sixteen chains at a moderate temperature and
;; keep the final answer most of them reach (vote counts the answers the task extracts, so
;; different chains to the same result agree). Sixteen, the cap evolution.limits.max_votes:
;; on running-sum, 16 votes gained more than 8 on 8 of 9 models measured (docs/BENCHMARKS.md).
(define self-consistency (vote 16 (sample (temperature logits 0.7))))
