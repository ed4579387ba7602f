;; expect: 2:23: expected Bool, found the number 1
(define a (greedy (if 1 logits logits)))
