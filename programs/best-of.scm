;; Draw four tempered samples and keep the one the model scores highest.
(define best-of-four (best-of 4 (sample (temperature logits 0.9))))
