;; Confidence logic: near-greedy when the top token is clearly ahead (or the distribution is
;; nearly one-hot already), min-p otherwise.
(define confident-or-min-p
  (sample (if (or (and (> (max-prob logits) 0.5) (not (< (margin logits) 0.2)))
                  (< (entropy logits) 0.1))
              (temperature logits (fixed 0.3))
              (min-p logits 0.05))))
