;; expect: 2:31: p of top-p must be in (0, 1)
(setv a (sample (top-p logits 0)))
