;; expect: 3:1: unterminated string
(define a (greedy logits))
"never closed
