;; A tight nucleus.
(define top-p-low-teacher (sample (top-p logits 0.6)))
