;; expect: 2:19: expected Logits, found a vector
(define a (greedy #(1 2 3)))
