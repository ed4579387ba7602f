;; expect: 2:46: r of repetition-penalty must be >= 1
(define a (sample (repetition-penalty logits 0.9)))
