"""CI step: pip-audit over the dependencies installed in the project's venv (the resolved, pinned set).

    python3 .ci/audit.py [--venv .venv]

- pip-audit runs from its own tool venv (`.ci/.audit-venv`), so its dependencies are not audited as ours
  and cannot change what the project resolved; it reads `pip freeze --exclude-editable` of the project venv
  (exact pins) with `--no-deps --disable-pip`: no resolution, no install.
- The only network it uses is PyPI: its JSON API (the default `pypi` vulnerability service, backed by the
  PyPA advisory database / OSV data that PyPI serves). Nothing else is contacted.
- Policy: a vulnerability with a fixed version available fails CI (upgrade the pin). One with no fix yet is
  printed as a warning and does not fail CI (nothing to upgrade to; track it, mitigate, or drop the package);
  list an ID in `.ci/audit-ignore` (one per line, `ID  # reason`) to silence a reviewed fixable one.
- When PyPI's vulnerability data cannot be reached (no network, or a mirror without the per-release JSON API,
  as on some CI machines), the step prints SKIPPED with the reason and exits 0 instead of failing CI: an
  audit that could not look anything up must not pass as "no known vulnerabilities" either.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL_VENV = ROOT / ".ci" / ".audit-venv"
IGNORE_FILE = ROOT / ".ci" / "audit-ignore"


def _skip(reason: str) -> int:
    print(f"pip-audit: SKIPPED — {reason}")
    return 0


def _ensure_tool() -> Path | None:
    exe = TOOL_VENV / "bin" / "pip-audit"
    if exe.exists():
        return exe
    subprocess.run([sys.executable, "-m", "venv", str(TOOL_VENV)], check=True)
    done = subprocess.run([str(TOOL_VENV / "bin" / "python"), "-m", "pip", "install", "-q",
                           "--disable-pip-version-check", "pip-audit>=2.7,<3"], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return exe


def _ignored() -> set[str]:
    if not IGNORE_FILE.exists():
        return set()
    return {line.split("#", 1)[0].strip() for line in IGNORE_FILE.read_text().splitlines() if line.split("#", 1)[0].strip()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=str(ROOT / ".venv"), help="the project venv to audit")
    args = parser.parse_args()
    python = Path(args.venv) / "bin" / "python"
    if not python.exists():
        print(f"pip-audit: no project venv at {args.venv} (run `make install` first)", file=sys.stderr)
        return 2
    tool = _ensure_tool()
    if tool is None:
        return _skip("pip-audit could not be installed from PyPI (no network?)")
    frozen = subprocess.run([str(python), "-m", "pip", "freeze", "--exclude-editable"], check=True,
                            capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        report = Path(tmp) / "audit.json"
        requirements.write_text(frozen)
        run = subprocess.run([str(tool), "-r", str(requirements), "--no-deps", "--disable-pip", "--progress-spinner",
                              "off", "--vulnerability-service", "pypi", "--format", "json", "--output", str(report)],
                             capture_output=True, text=True, timeout=600)
        if not report.exists():
            return _skip(f"pip-audit could not query PyPI: {(run.stderr or run.stdout).strip()[-400:]}")
        data = json.loads(report.read_text())
    deps = data.get("dependencies", [])
    audited = [d for d in deps if "skip_reason" not in d]
    if not audited:
        reason = deps[0]["skip_reason"] if deps else "no dependencies listed"
        return _skip(f"PyPI's vulnerability data was unreachable for all {len(deps)} pinned dependencies "
                     f"(e.g. {reason!r})")
    ignored = _ignored()
    failing, unfixable = [], []
    for dep in audited:
        for vuln in dep.get("vulns", []):
            line = f"{dep['name']}=={dep['version']}: {vuln['id']} fix: {', '.join(vuln.get('fix_versions') or []) or 'none'}"
            if vuln["id"] in ignored or set(vuln.get("aliases", [])) & ignored:
                print(f"pip-audit: ignored (.ci/audit-ignore) {line}")
            elif vuln.get("fix_versions"):
                failing.append(line)
            else:
                unfixable.append(line)
    skipped = len(deps) - len(audited)
    print(f"pip-audit: {len(audited)} pinned dependencies audited against PyPI"
          + (f", {skipped} not found there (not audited)" if skipped else ""))
    for line in unfixable:
        print(f"pip-audit: WARNING no fix released yet: {line}")
    for line in failing:
        print(f"pip-audit: VULNERABLE (fix available): {line}")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
