;; The plain baseline: the most probable token at every step.
(define greedy-baseline (greedy logits))
