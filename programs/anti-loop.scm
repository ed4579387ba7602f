;; Anti-loop decoding: DRY (llama.cpp; its suggested multiplier 0.8, base 1.75, allowed length
;; 2) lowers every token that would extend a repeat of prompt + answer, then nucleus sampling.
(define dry-nucleus (sample (top-p (dry logits 0.8 1.75 2) 0.9)))

;; OpenAI / vLLM penalties on what the answer already holds: per occurrence and once.
(define penalised-sampling
  (sample (presence-penalty (frequency-penalty (temperature logits 0.8) 0.3) 0.2)))

;; no 3-gram of prompt + answer twice (transformers' no_repeat_ngram_size).
(define no-repeat-greedy (greedy (no-repeat-ngram logits 3)))
