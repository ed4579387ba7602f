;; Nucleus sampling with a calibrated temperature, voted five ways.
(define nucleus-vote (vote 5 (sample (top-p (temperature logits 0.8) 0.9))))
