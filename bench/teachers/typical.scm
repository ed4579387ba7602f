;; Locally typical sampling.
(define typical-teacher (sample (typical logits 0.85)))
