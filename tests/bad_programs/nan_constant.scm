;; expect: 2:39: must be finite
(define a (sample (temperature logits +nan.0)))
