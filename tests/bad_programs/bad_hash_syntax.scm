;; expect: 2:19: unknown '#' syntax
(define a (greedy #z))
