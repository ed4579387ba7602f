;; expect: 2:39: t of temperature must be > 0
(define a (sample (temperature logits -0.5)))
