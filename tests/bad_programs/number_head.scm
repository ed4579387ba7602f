;; expect: 2:20: expected a primitive name
(define a (greedy (1 logits)))
