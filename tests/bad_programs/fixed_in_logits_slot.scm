;; expect: 2:19: expected Logits, found (fixed ...)
(define a (greedy (fixed 0.5)))
