;; expect: 2:19: expected Logits, found (entropy ...) of type Real
(define a (greedy (entropy logits)))
