"""Acquire: the champion samples completions for the iteration's prompts; the prompt sources (a file, a user generator,
Self-Instruct) live beside it.
"""
