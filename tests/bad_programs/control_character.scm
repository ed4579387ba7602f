;; expect: 2:18: unexpected character
(define a (greedy[2J logits))
