"""The README's "Abandoned cart → postcard in five minutes", run as written (ports moved to free ones)."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from tests.cli.conftest import Running, check_output, running  # noqa: F401 (fixture)
from tests.cli.test_readme import SH, make_run, run_block, workdir
from tests.support.processes import wait_for
from tests.support.redis_server import free_port


def test_abandoned_cart_walkthrough_as_written(tmp_path: Path, running: list[Running]) -> None:  # noqa: F811
    start = next(i for i, block in enumerate(SH) if "CONFIG=examples/abandoned-cart.toml" in block)
    run_line, trigger, read = SH[start], SH[start + 1], SH[start + 2]
    port = free_port()
    cwd = workdir(tmp_path, free_port())
    proc = make_run(run_line.strip().splitlines()[0], port, cwd, running)
    run_block(trigger, cwd, {8000: port})
    again = run_block(trigger.split("# →")[0], cwd, {8000: port})
    assert '"replayed":true' in again and "ml_e9951c61dc893908e7a64f9aba" in again

    def rendered() -> bool:
        view = httpx.get(f"http://127.0.0.1:{port}/v1/mailings/ml_e9951c61dc893908e7a64f9aba",
                         headers={"Authorization": "Bearer dev-api-token-change-me"})
        return view.json().get("status") == "dry_run"

    assert wait_for(rendered, 30, 0.1), proc.output()
    run_block(read, cwd, {8000: port})
    assert proc.stop(signal.SIGTERM) == 0
    check_output(proc.output())
