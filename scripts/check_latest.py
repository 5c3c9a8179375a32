"""Upstream check: kg2text's test suite on the newest releases of everything it depends on.

Makes a throw-away virtual environment, installs kg2text without dependencies, then the newest
release of each dependency named in pyproject.toml (core, test and bench extras), ignoring our own
exclusions, and runs the suite twice: kg2text's own tests, then the anchor tests that compare with
PEFT. It prints which packages moved from constraints.txt and what broke, so that an upstream break
of PEFT reads as the anchor's problem and a break of kg2text as ours.

    python scripts/check_latest.py            # about 8 minutes on 2 cores

torch stays at 2.13.0, the CPU build this machine installs from disk (the newest torch on PyPI is
the CUDA build, several GB). Exit code: 0 all green, 1 kg2text's own tests failed, 3 only anchors failed.
Not part of CI: upstream releases must not block our landings.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"


def dependency_names() -> list[str]:
    """Every distribution pyproject.toml names (core and extras), without version ranges, torch left out."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    names = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].strip() for r in requirements}
    return sorted(names - {"torch"}, key=str.lower)


def pinned(path: Path) -> dict[str, str]:
    """``name -> version`` from a pip-freeze style file."""
    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[normalise(name)] = version.strip().split("+")[0]  # 2.13.0+cpu is 2.13.0
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, **kwargs)


def failures(junit: Path) -> list[tuple[str, str]]:
    """(test id, first line of its message) for every failed or erroring test in a junit XML file."""
    found = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        for problem in list(case.findall("failure")) + list(case.findall("error")):
            message = (problem.get("message") or problem.text or "").strip().splitlines()
            found.append((f"{case.get('classname')}::{case.get('name')}", message[0][:300] if message else ""))
    return found


def counts(junit: Path) -> tuple[int, int]:
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total = int(suite.get("tests", 0)) - int(suite.get("skipped", 0))
    return total, int(suite.get("failures", 0)) + int(suite.get("errors", 0))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="kg2text-latest-") as work:
        venv = Path(work) / "venv"
        run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        pip = [python, "-m", "pip", "install", "-q"]
        run(pip + [TORCH], check=True)
        run(pip + ["--no-deps", "-e", "."], check=True)
        run(pip + ["--upgrade"] + dependency_names(), check=True)
        frozen = run([python, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True, check=True)
        lines = [line.split("==", 1) for line in frozen.stdout.splitlines() if "==" in line]
        newest = {normalise(name): version.split("+")[0] for name, version in lines}
        suites = {}
        for label, marker in (("kg2text's own tests", "not anchor"), ("anchor tests (PEFT)", "anchor")):
            junit = Path(work) / f"{marker.replace(' ', '-')}.xml"
            run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker, f"--junitxml={junit}", "tests"])
            suites[label] = (counts(junit), failures(junit))
    print("\n== upstream check: newest releases against constraints.txt ==")
    pins = pinned(ROOT / "constraints.txt")
    moved = [(name, pins[name], newest[name]) for name in sorted(newest) if name in pins and pins[name] != newest[name]]
    for name, old, new in moved:
        print(f"  moved: {name} {old} -> {new}")
    print("  moved: nothing" if not moved else "")
    for label, ((total, failed), problems) in suites.items():
        print(f"{label}: {total - failed} passed, {failed} failed")
        for test, message in problems:
            print(f"  FAILED {test}\n    {message}")
    own_failed, anchors_failed = (suites[label][0][1] for label in suites)
    if own_failed:
        print("verdict: kg2text itself breaks on the newest releases: fix kg2text or exclude the release in "
              "pyproject.toml before the next lock")
        return 1
    if anchors_failed:
        print("verdict: kg2text works on the newest releases; the PEFT anchor breaks there (an upstream problem): "
              "keep that release excluded for the [test]/[bench] extras and keep constraints.txt")
        return 3
    print("verdict: everything passes on the newest releases; scripts/lock.sh may move constraints.txt forward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
