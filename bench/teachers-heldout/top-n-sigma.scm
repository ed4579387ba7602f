;; Top-n-sigma.
(define top-n-sigma-teacher (sample (top-n-sigma logits 1.5)))
