;; expect: 2:40: p of top-p must be in (0, 1)
(define a (sample (top-p logits (fixed 2.0))))
