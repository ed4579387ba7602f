;; expect: 2:33: a Count must be at most 2147483647
(define a (sample (top-k logits 99999999999999999999999)))
