;; expect: 2:19: empty list
(define a (greedy ()))
