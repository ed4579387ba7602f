;; Self-consistency (Wang et al. 2022): sample eight chains at a moderate temperature and
;; keep the final answer most of them reach (vote counts the answers the task extracts, so
;; different chains to the same result agree).
(define self-consistency (vote 8 (sample (temperature logits 0.7))))
