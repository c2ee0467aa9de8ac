"""Stores: each owns its Redis keys and scripts; the receiver, the workers and the CLI call the same functions."""
