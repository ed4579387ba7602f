;; A practitioner's chain: temperature, then top-k.
(define top-k-temperature-teacher (sample (top-k (temperature logits 0.8) 20)))
