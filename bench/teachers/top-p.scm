;; Nucleus truncation.
(define top-p-teacher (sample (top-p logits 0.8)))
