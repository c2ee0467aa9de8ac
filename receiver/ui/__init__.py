"""The web console: pages, sign-in sessions, charts (server-rendered; see `docs/console.md`)."""
