;; expect: 2:9: 'top-p' is a primitive
(define top-p (greedy logits))
