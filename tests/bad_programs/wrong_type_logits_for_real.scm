;; expect: 2:39: expected Real, found 'logits'
(define a (greedy (temperature logits logits)))
