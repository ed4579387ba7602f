;; Mirostat v2 (llama.cpp): truncate at surprise mu, mu adapted per answer so that the chosen
;; tokens' surprise tracks tau bits (llama.cpp's defaults: tau 5, learning rate eta 0.1).
(define mirostat-sampling (sample (mirostat logits 5.0 0.1)))

;; XTC (llama.cpp): half of the steps, exclude the top choices above 10% but the least likely.
(define xtc-sampling (sample (xtc (min-p logits 0.05) 0.1 0.5)))
