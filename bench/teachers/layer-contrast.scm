;; Contrast the final layer with the logit lens of block 1.
(define layer-contrast-teacher (sample (contrast logits (layer 1) 0.4)))
