;; expect: 2:37: Hy keyword
(setv a (sample (temperature logits :hot)))
