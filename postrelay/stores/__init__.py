"""Stores: each owns its Redis keys (built in `postrelay.keys`) and its scripts; used by receiver and workers."""
