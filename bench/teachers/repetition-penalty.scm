;; A repetition penalty.
(define repetition-teacher (sample (repetition-penalty logits 1.3)))
