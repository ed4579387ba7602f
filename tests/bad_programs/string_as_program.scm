;; expect: 2:11: found a string
(define a "greedy")
