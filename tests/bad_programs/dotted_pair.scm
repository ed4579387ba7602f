;; expect: 2:1: dotted list
(define a . (greedy logits))
