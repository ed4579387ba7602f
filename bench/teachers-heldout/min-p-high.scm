;; A high min-p.
(define min-p-high-teacher (sample (min-p logits 0.25)))
