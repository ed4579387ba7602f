;; expect: 2:19: only allowed at the top level
(define a (greedy (define b logits)))
