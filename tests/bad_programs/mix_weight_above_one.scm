;; expect: 2:38: w of mix must be in [0, 1]
(define a (greedy (mix logits logits 1.5)))
