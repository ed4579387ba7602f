;; expect: 3:24: unknown name 'logitz'
(define a
  (greedy (temperature logitz 0.7)))
