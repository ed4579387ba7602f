;; expect: 2:9: name must be a symbol
(define "a" (greedy logits))
