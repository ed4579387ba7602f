;; expect: 2:33: a Count must be >= 1
(define a (greedy (top-k logits 0)))
