;; Epsilon sampling.
(define epsilon-teacher (sample (epsilon logits 0.02)))
