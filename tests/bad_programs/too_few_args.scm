;; expect: 2:19: takes 2 arguments
(define a (greedy (top-p logits)))
