;; expect: 3:1: unterminated block comment
(define a (greedy logits))
#| open #| nested |# but never closed
