;; Eta sampling.
(define eta-teacher (sample (eta logits 0.005)))
