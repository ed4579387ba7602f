;; expect: 2:1: unclosed '('
(setv a
  (greedy logits)
