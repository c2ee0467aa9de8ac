"""Delivering one canonical event to one destination: at-least-once, never twice once answered.

- `attempt` — the one entry point that runs an attempt (called by the worker's executor);
- `outcome` — storing a success (done marker first), a retry, a dead letter, through Redis outages;
- `lock` — the execution lock and its renewer;
- `due` — the due-time loop that claims what is due (retries, waits, work of killed workers).
The records themselves (keys, staging, scheduling, reads) are the core's `postrelay.core.stores.deliveries`.
"""

from postrelay.workers.delivery.attempt import attempt

__all__ = ["attempt"]
