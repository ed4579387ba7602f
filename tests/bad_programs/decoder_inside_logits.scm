;; expect: 2:19: of type Decoder
(define a (greedy (sample logits)))
