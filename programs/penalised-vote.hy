;; Written in Hy, read with Hy's reader and never run as Python: a repetition penalty under
;; a nucleus, voted three ways.
(setv penalised-vote (vote 3 (sample (top-p (repetition-penalty logits 1.2) 0.9))))
