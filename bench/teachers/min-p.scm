;; Min-p truncation.
(define min-p-teacher (sample (min-p logits 0.1)))
