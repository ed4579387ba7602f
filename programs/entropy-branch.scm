;; Branch on uncertainty: sharpen when the model is sure, keep a nucleus when it is not.
(define entropy-branch
  (sample (if (< (entropy logits) 1.0) (temperature logits 0.5) (top-p logits 0.9))))
