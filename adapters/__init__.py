"""One module per outside system, all behind `adapters.base.Adapter`.

`ADAPTERS` maps a destination `type` to its class path; classes are imported lazily so a worker only
loads what its config uses.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import ValidationError

from postrelay.adapters.base import Adapter
from postrelay.core.config_errors import did_you_mean, format_validation

ADAPTERS: dict[str, str] = {
    "webhook": "postrelay.adapters.webhook:WebhookAdapter",
    "hubspot": "postrelay.adapters.hubspot:HubSpotAdapter",
    "pipedrive": "postrelay.adapters.pipedrive:PipedriveAdapter",
    "salesforce": "postrelay.adapters.salesforce:SalesforceAdapter",
    "sendgrid": "postrelay.adapters.sendgrid:SendGridAdapter",
    "twilio": "postrelay.adapters.twilio:TwilioAdapter",
    "klaviyo": "postrelay.adapters.klaviyo:KlaviyoAdapter",
    "customerio": "postrelay.adapters.customerio:CustomerIOAdapter",
    "postgrid": "postrelay.adapters.postgrid:PostGridAdapter",
    "lob": "postrelay.adapters.lob:LobAdapter",
}


def adapter_class(type_name: str) -> type[Adapter]:
    """The adapter class for a destination type; KeyError names the unknown type."""
    try:
        path = ADAPTERS[type_name]
    except KeyError:
        raise KeyError(f"unknown destination type {type_name!r}; known: {sorted(ADAPTERS)}") from None
    module, _, cls = path.partition(":")
    return getattr(importlib.import_module(module), cls)


CORE_KEYS = ("type", "rate_limit", "batch_size", "batch_linger")  # `[destinations.NAME]` keys the core config validates itself


def check_destination(name: str, table: Any) -> list[str]:
    """Problems of one raw `[destinations.NAME]` table against its adapter's settings, one `key: message` line
    each (an unknown type names the known ones; a missing type is the core config's to report)."""
    if not isinstance(table, dict) or not isinstance(table.get("type"), str):
        return []
    type_name = table["type"]
    if type_name not in ADAPTERS:
        return [f"destinations.{name}.type: unknown destination type {type_name!r}{did_you_mean(type_name, ADAPTERS)}; "
                f"known: {', '.join(sorted(ADAPTERS))}"]
    cls = adapter_class(type_name)
    try:
        cls.Settings.model_validate({k: v for k, v in table.items() if k not in CORE_KEYS})
    except ValidationError as err:
        return format_validation(err, cls.Settings, prefix=("destinations", name))
    return []
