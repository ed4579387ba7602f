;; expect: 2:19: takes no arguments
(define a (greedy (logits)))
