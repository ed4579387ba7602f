;; Entropy-scaled temperature (llama.cpp's dynamic temperature).
(define dynamic-temperature-teacher (sample (dynamic-temperature logits 1.0 0.5 1.0)))
