;; expect: 3:1: 'a' is already defined at line 2
(define a (greedy logits))
(define a (sample logits))
