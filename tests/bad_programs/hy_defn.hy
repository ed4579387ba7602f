;; expect: 2:1: found '(defn ...)'
(defn a [] (greedy logits))
