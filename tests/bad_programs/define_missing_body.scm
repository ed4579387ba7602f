;; expect: 2:1: takes a name and one expression, found 1 part
(define a)
