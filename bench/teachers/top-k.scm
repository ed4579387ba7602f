;; Top-k truncation.
(define top-k-teacher (sample (top-k logits 12)))
