;; expect: 2:30: needs at least one entry
(define a (greedy (layer-mix #())))
