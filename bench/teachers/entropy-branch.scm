;; Sharpen when the model is sure, plain sampling otherwise.
(define entropy-branch-teacher
  (sample (if (< (entropy logits) 1.5) (temperature logits 0.6) logits)))
