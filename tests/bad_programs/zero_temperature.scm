;; expect: 2:39: must be > 0
(define a (sample (temperature logits 0.0)))
