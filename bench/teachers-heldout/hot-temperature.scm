;; Plain sampling, hotter than the model.
(define hot-temperature-teacher (sample (temperature logits 1.4)))
