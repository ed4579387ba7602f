;; Confidence logic: near-greedy when the top token is clearly ahead, min-p otherwise.
(define confident-or-min-p
  (sample (if (and (> (max-prob logits) 0.5) (not (< (margin logits) 0.2)))
              (temperature logits (fixed 0.3))
              (min-p logits 0.05))))
