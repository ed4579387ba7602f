;; expect: 2:36: holds real numbers
(define a (greedy (layer-mix #(0.1 x 0.3))))
