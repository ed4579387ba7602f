;; expect: 2:39: found a character
(define a (sample (temperature logits #\a)))
