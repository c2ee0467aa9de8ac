"""Stores: what lives in Redis, read and written by the receiver, the workers and the CLI alike.

Each store owns its keys (built in `postrelay.core.keys`) and its Lua (`postrelay/core/lua/`):
- `deliveries` — delivery records, attempts, done markers, the due-time set and scheduling;
- `dlq` — dead letters: list, add, replay;
- `destinations` — pause / resume and the per-destination report;
- `circuit` — each destination's circuit breaker;
- `followups` — pending follow-ups: list, cancel;
- `indexes` — the console's campaign funnels and search indexes, kept by the timeline's script; `catalog`
  reads them.
- `links` / `link_binding` — tracking links: mint, read, revoke, bind; binding pieces and visits in the dispatcher.
- `mailings` — mailing records, their work queue, idempotency, cooldowns and daily caps.
"""
