"""`postrelay mailings list/show`: the same records as the API, as text or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from postrelay.cli import main
from tests.mailings.conftest import Env, mailing, mailing_config
from tests.support.processes import write_config
from tests.support.providers import address_error


def test_mailings_list_and_show(env: Env, tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "c.toml", mailing_config(redis_url, env.postgrid.url, env.lob.url))
    ok = env.post_mailing(mailing("lob"), key="one").json()["mailing_id"]
    env.postgrid.script.append(address_error("postgrid"))
    bad = env.post_mailing(mailing("pg"), key="two").json()["mailing_id"]
    env.work()

    assert main(["mailings", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert ok in out and bad in out and "created" in out and "invalid_address_error" in out

    assert main(["mailings", "list", "--status", "failed", "--json", "--config", str(config)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["mailing_id"] for r in rows] == [bad]
    assert main(["mailings", "list", "--provider", "lob", "--json", "--config", str(config)]) == 0
    assert [r["mailing_id"] for r in json.loads(capsys.readouterr().out)] == [ok]

    assert main(["mailings", "show", ok, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "status          created" in out and env.lob.pieces[0]["id"] in out

    assert main(["mailings", "show", "ml_missing", "--config", str(config)]) == 1
    assert "no mailing 'ml_missing'" in capsys.readouterr().out
