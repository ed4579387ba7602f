;; A frequency penalty.
(define frequency-penalty-teacher (sample (frequency-penalty logits 0.8)))
