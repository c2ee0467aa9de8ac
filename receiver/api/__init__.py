"""The JSON API beside the webhooks: mailpieces, campaigns, deliveries, dead letters, destinations, follow-ups.

Every endpoint takes `Authorization: Bearer <token>` (`receiver.auth`): `read` to look, `operate` to replay,
pause, resume or cancel. Lists page with an opaque `cursor` (`next_cursor` in the answer, null on the last
page). The console (`receiver.ui`) calls the same functions as these handlers.
"""
