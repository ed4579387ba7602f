;; expect: 2:26: a Count must be >= 1
(define a (greedy (layer 0)))
