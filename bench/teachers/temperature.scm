;; Plain sampling at a calibrated temperature.
(define temperature-teacher (sample (temperature logits 0.7)))
