;; expect: 2:11: expected Decoder
(define a (top-p logits 0.9))
