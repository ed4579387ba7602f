;; expect: 2:11: expected Decoder, found 'logits'
(define a logits)
