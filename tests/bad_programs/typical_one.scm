;; expect: 2:35: p of typical must be in (0, 1)
(define a (sample (typical logits 1.0)))
