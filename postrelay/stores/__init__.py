"""Stores: each owns its Redis keys and its Lua; receiver, workers and the CLI call the same functions."""
