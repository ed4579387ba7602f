;; expect: 2:19: did you mean 'logits'
(define a (greedy logit))
