;; expect: 2:27: no list is open here
(define a (greedy logits)))
