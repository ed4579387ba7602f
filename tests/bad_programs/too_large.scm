;; expect: 2:11: exceeds the cap max_size = 64
(define a (sample (if (and (< (entropy logits) 1.0) (> (margin logits) 0.1))
  (mix (top-k logits 5) (mix (top-p logits 0.9) (mix (min-p logits 0.1) (mix (typical logits 0.9) (mix (layer 1) (mix (layer 2) (mix (layer 3) (temperature logits 0.5) 0.5) 0.5) 0.5) 0.5) 0.5) 0.5) 0.5)
  (mix (top-k logits 5) (mix (top-p logits 0.9) (mix (min-p logits 0.1) (mix (typical logits 0.9) (mix (layer 1) (mix (layer 2) (mix (layer 3) (temperature logits 0.5) 0.5) 0.5) 0.5) 0.5) 0.5) 0.5) 0.5))))
