;; expect: 2:33: 'fixed' takes one number
(define a (sample (top-p logits (fixed logits))))
