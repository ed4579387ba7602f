;; expect: 2:33: p of top-p must be in (0, 1)
(define a (sample (top-p logits 1.5)))
