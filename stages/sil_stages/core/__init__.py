"""The shared core every stage stands on: the stage contract (configs, manifests, names), the settings shared with the
spec, the store, records, models and generation.
"""
