;; expect: 2:46: a of contrast must be >= 0
(define a (greedy (contrast logits (layer 1) -1)))
