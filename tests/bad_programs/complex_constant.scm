;; expect: 2:39: complex number
(define a (sample (temperature logits 1+2i)))
