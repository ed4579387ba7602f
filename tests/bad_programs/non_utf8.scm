;; expect: 2:19: not valid UTF-8
(define a (greedy ÿþ logits))
