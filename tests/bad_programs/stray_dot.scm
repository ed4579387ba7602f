;; expect: 2:11: found a dotted list
(define a (greedy . logits))
