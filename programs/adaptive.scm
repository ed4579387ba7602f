;; Settings that adapt per row. Temperature: half the row's entropy, at least 0.3;
;; then llama.cpp's top-n-sigma keeps the scores within 1.5 standard deviations of the top.
(define adaptive-temperature
  (sample (top-n-sigma (temperature logits (max 0.3 (* 0.5 (entropy logits)))) 1.5)))

;; llama.cpp's dynamic temperature (0.8 +- 0.5 by normalised entropy), then eta sampling.
(define dynamic-eta (sample (eta (dynamic-temperature logits 0.8 0.5 1.0) 0.0009)))

;; Epsilon sampling whose cutoff falls as the top-1/top-2 margin narrows (at most 0.01).
(define epsilon-margin
  (sample (epsilon logits (min 0.01 (/ (- (+ (margin logits) 0.001) 0.0005) 20.0)))))
