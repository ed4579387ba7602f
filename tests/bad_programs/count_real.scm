;; expect: 2:33: expected a Count (a positive integer), found 2.5
(define a (greedy (top-k logits 2.5)))
