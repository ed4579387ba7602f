;; expect: 2:33: not valid UTF-8
(define a (greedy logits)) ; λλ �
