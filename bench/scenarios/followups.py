"""Follow-ups: 100,000 pending follow-ups scheduled; time to schedule, Redis memory, due → fired delay.

The scenario is written against `workers.followups.schedule_many(...)`. Until that module and function
exist the rows print "n/a (scheduler not implemented yet)": no number is made up.
"""

from __future__ import annotations

import importlib
import importlib.util

from bench.context import Context
from bench.report import Row

NOT_YET = "n/a (scheduler not implemented yet)"
NO_SCENARIO = "n/a (schedule_many exists; bench scenario not written yet)"


def scheduler_available() -> bool:
    """True when `workers.followups.schedule_many` can be imported."""
    if importlib.util.find_spec("workers.followups") is None:
        return False
    module = importlib.import_module("workers.followups")
    return callable(getattr(module, "schedule_many", None))


def run(ctx: Context) -> list[Row]:
    """The follow-up rows (n/a until the scheduler exists)."""
    na = NO_SCENARIO if scheduler_available() else NOT_YET
    n = f"{ctx.profile.followups:,}"
    return [
        Row("follow-ups", f"time to schedule {n} pending", "s", None, "—", None, na=na),
        Row("follow-ups", f"Redis memory for {n} pending", "B", None, "—", None, na=na),
        Row("follow-ups", "due time → fired delay p50/p99", "ms", None, "—", None, na=na),
    ]
