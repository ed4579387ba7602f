;; expect: 2:19: write (top-p L p)
(define a (greedy top-p))
