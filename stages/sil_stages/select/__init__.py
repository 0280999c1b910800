"""Select: score the samples and keep what the loop trains on; the scorers (also GRPO's reward and evaluate's proxy)
and the keep rules (pass rate, difficulty, top-k, pairs, dedupe, accumulated history).
"""
