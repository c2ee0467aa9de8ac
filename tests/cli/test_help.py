"""Every command of the tree answers `--help` (exit 0) and keeps its flags: the CLI's public contract."""

from __future__ import annotations

import click
import pytest

from postrelay import cli


def every_command(group: click.Group = cli.cli, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, command in group.commands.items():
        out.append(((*prefix, name), command))
        if isinstance(command, click.Group):
            out.extend(every_command(command, (*prefix, name)))
    return out


# the flags each command had before it became a click group (README "Commands")
FLAGS = {
    ("run",): {"--config", "--host", "--port", "--log-format"},
    ("serve",): {"--config", "--host", "--port", "--log-format", "--workers"},
    ("worker",): {"--config", "--log-format", "--burst"},
    ("check-config",): {"--config"},
    ("status",): {"--config", "--json"},
    ("dlq", "list"): {"--config", "--destination", "--since", "--limit", "--json"},
    ("dlq", "replay"): {"--config", "--destination", "--since"},
    ("destinations",): {"--config", "--json"},
    ("destinations", "pause"): {"--config"},
    ("destinations", "resume"): {"--config"},
    ("followups", "list"): {"--config", "--mailpiece", "--json"},
    ("followups", "cancel"): {"--config"},
    ("mailings", "list"): {"--config", "--status", "--trigger", "--limit", "--json"},
    ("mailings", "show"): {"--config", "--json"},
    ("backfill",): {"--config", "--since", "--until", "--page-size", "--max-pages", "--no-progress", "--json"},
    ("reindex",): {"--config", "--rebuild", "--no-progress"},
    ("demo",): {"--config", "--pieces", "--campaigns", "--seed", "--no-progress"},
    ("links", "mint"): {"--config", "--csv", "--out", "--target-url", "--campaign-id", "--no-progress"},
    ("migrate",): {"--config", "--no-progress", "--json"},
}


def test_the_tree_has_every_command() -> None:
    names = {path for path, _ in every_command()}
    assert set(FLAGS) <= names
    assert [c.name for c in cli.TREE] == ["run", "serve", "worker", "check-config", "status", "dlq", "destinations",
                                          "followups", "mailings", "backfill", "reindex", "demo", "links",
                                          "migrate"]


@pytest.mark.parametrize("path", list(FLAGS), ids=" ".join)
def test_help_lists_the_flags(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: postrelay {' '.join(path)} ")
    for flag in FLAGS[path]:
        assert flag in out


def test_top_level_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for path, _ in every_command():
        if len(path) == 1:
            assert f"  {path[0]} " in out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("postrelay, version ")


def test_nothing_below_the_cli_imports_it() -> None:
    """The CLI is the top layer: the core, receiver, workers and adapters never import `postrelay.cli`."""
    import re

    from tests.support.processes import ROOT

    below = [p for d in ("postrelay", "receiver", "workers", "adapters") for p in (ROOT / d).rglob("*.py")
             if "cli" not in p.relative_to(ROOT).parts[:2]]
    assert len(below) > 30
    for path in below:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from postrelay\.cli\b|from postrelay import cli\b|import postrelay\.cli\b)", text,
                             re.MULTILINE), path
