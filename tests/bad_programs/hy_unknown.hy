;; expect: 2:18: did you mean 'top-p'
(setv a (greedy (top-q logits 0.9)))
