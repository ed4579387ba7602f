;; Layer contrast: the final layer's log-probabilities minus half of block 1's (a DoLa-like
;; amateur), over the tokens the final layer keeps.
(define layer-contrast (greedy (contrast (top-k logits 20) (layer 1) 0.5)))

;; A blend of the final layer with the logit lens of block 2.
(define layer-blend (greedy (mix logits (layer 2) 0.8)))
