;; The Phase 1 inference engine of the background documents: a learned mix of the blocks'
;; residual streams and of a head-gated pass, a repetition penalty, a calibrated temperature
;; and a nucleus. With --mode phase1 its structure stays frozen and every constant is tuned
;; by gradient. Weights are sized for the default model (4 blocks x 4 heads).
(define phase1-engine
  (sample (top-p (temperature (repetition-penalty (mix (layer-mix #(0.0 0.0 0.0 2.0))
                                                       (gated #(3.0 3.0 3.0 3.0 3.0 3.0
                                                                3.0 3.0 3.0 3.0 3.0 3.0
                                                                3.0 3.0 3.0 3.0))
                                                       0.5)
                                                  1.1)
                              0.8)
                 0.9)))
