;; expect: 2:17: exceeds the cap max_votes = 16
(define a (vote 1000 (greedy logits)))
