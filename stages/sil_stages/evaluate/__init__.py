"""Evaluate: measure candidate and champion on held-out data; significance, collapse/reward-hacking/contamination
guards, refinement and the reward gap's trend.
"""
