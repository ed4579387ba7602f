;; expect: 2:19: bytevector
(define a (greedy #u8(1 2)))
