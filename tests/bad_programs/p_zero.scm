;; expect: 2:33: p of min-p must be in (0, 1)
(define a (sample (min-p logits 0)))
