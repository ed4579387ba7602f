;; expect: 2:1: expected a definition '(setv NAME EXPR)'
(import os)
(os.system "echo pwned")
