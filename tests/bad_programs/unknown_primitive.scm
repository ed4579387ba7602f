;; expect: 2:20: did you mean 'top-p'
(define a (sample (top-q logits 0.9)))
