"""The distribution installs one import package, `postrelay` (issue 13): the wheel's contents, and the wheel working
on its own, away from the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # built from a copy: setuptools writes build/ and *.egg-info next to the sources
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("postrelay", "receiver", "workers", "adapters"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check",
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (found,) = out.glob("postrelay-*.whl")
    return found


def test_the_wheel_has_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"postrelay"}
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["postrelay"]


def test_the_wheel_carries_every_layer_and_its_data_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for repo_dir, package in (("receiver", "postrelay/receiver"), ("workers", "postrelay/workers"),
                              ("adapters", "postrelay/adapters"), ("postrelay/core", "postrelay/core"),
                              ("postrelay/cli", "postrelay/cli")):
        files = {p.relative_to(ROOT / repo_dir).as_posix() for p in (ROOT / repo_dir).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
        wanted = {f"{package}/{f}" for f in files if f.endswith((".py", ".lua", ".html", ".css", ".txt"))}
        assert wanted, repo_dir
        assert wanted <= names, sorted(wanted - names)[:5]


def test_the_unpacked_wheel_imports_and_finds_its_data_without_the_repository(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys, postrelay.receiver.app, postrelay.workers.worker, postrelay.adapters.hubspot, postrelay.cli;"
        "from postrelay.core.scripts import lua;"
        "from postrelay.receiver.ui.routes import console_routes;"
        "from postrelay.receiver import linkbots;"
        "assert postrelay.receiver.app.__file__.startswith(sys.argv[1]), postrelay.receiver.app.__file__;"
        "assert lua('ingest_enqueue').source;"
        "assert linkbots.load_scanners();"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('receiver', 'workers', 'adapters'));"
        "assert not bad, bad;"
        "print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}",
                           str(site)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


def test_the_editable_install_imports_the_layers_only_under_postrelay() -> None:
    code = ("import sys, postrelay.cli.service, postrelay.receiver.app, postrelay.workers.worker;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('receiver', 'workers', 'adapters')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert proc.stdout.strip() == "[]"
