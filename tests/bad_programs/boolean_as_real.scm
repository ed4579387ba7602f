;; expect: 2:39: expected Real, found a boolean
(define a (sample (temperature logits #t)))
