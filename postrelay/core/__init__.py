"""The shared core: events, config, keys, Redis connections, logging and stores."""
