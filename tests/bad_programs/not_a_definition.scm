;; expect: 2:1: expected a definition '(define NAME EXPR)'
(greedy logits)
