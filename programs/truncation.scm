;; The truncation family: top-k, min-p and locally typical sampling.
(define top-k-sampling (sample (top-k (temperature logits 0.7) 10)))

;; min-p scales its cut with the model's confidence.
(define min-p-sampling (sample (min-p logits 0.1)))

;; keep the tokens whose surprise is closest to the expected surprise.
(define typical-sampling (sample (typical logits 0.9)))
