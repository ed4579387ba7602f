;; expect: 2:11: found a quoted datum
(define a '(greedy logits))
