;; expect: 2:123: max_height = 17
(define a (greedy (if (not (not (not (not (not (not (not (not (not (not (not (not (not (not (not (not (not (not (not (not #t)))))))))))))))))))) logits logits)))
