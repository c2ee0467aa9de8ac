"""The JSON API beside the webhooks: one module per resource, each a small class with a `routes()` list."""
