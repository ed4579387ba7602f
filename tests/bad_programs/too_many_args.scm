;; expect: 2:19: takes 1 argument
(define a (greedy (entropy logits logits)))
