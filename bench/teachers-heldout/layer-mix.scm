;; Mix the final layer with the logit lens of block 1.
(define layer-mix-teacher (sample (mix logits (layer 1) 0.7)))
