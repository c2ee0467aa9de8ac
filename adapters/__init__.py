"""One module per outside system, all behind `adapters.base.Adapter`.

`ADAPTERS` maps a destination `type` to its class path; classes are imported lazily so a worker only
loads what its config uses.
"""

from __future__ import annotations

import importlib

from adapters.base import Adapter

ADAPTERS: dict[str, str] = {
    "webhook": "adapters.webhook:WebhookAdapter",
    "hubspot": "adapters.hubspot:HubSpotAdapter",
    "pipedrive": "adapters.pipedrive:PipedriveAdapter",
    "salesforce": "adapters.salesforce:SalesforceAdapter",
    "sendgrid": "adapters.sendgrid:SendGridAdapter",
    "twilio": "adapters.twilio:TwilioAdapter",
    "klaviyo": "adapters.klaviyo:KlaviyoAdapter",
    "customerio": "adapters.customerio:CustomerIOAdapter",
    "postgrid": "adapters.postgrid:PostGridAdapter",
    "lob": "adapters.lob:LobAdapter",
}


def adapter_class(type_name: str) -> type[Adapter]:
    """The adapter class for a destination type; KeyError names the unknown type."""
    try:
        path = ADAPTERS[type_name]
    except KeyError:
        raise KeyError(f"unknown destination type {type_name!r}; known: {sorted(ADAPTERS)}") from None
    module, _, cls = path.partition(":")
    return getattr(importlib.import_module(module), cls)
