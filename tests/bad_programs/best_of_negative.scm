;; expect: 2:20: a Count must be >= 1
(define a (best-of -2 (greedy logits)))
