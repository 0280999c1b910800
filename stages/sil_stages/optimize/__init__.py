"""Optimize: train the candidate from the champion on select's data; the methods (SFT, DPO, GRPO) behind one registry,
the multi-process launcher and trainer checkpoints.
"""
