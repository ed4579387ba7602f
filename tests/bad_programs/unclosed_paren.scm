;; expect: 2:1: unclosed '('
(define a
  (greedy (top-k logits 3))
