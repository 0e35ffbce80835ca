"""What produced a benchmark result: the checkout's commit."""
from __future__ import annotations

import subprocess
from pathlib import Path


def commit() -> str:
    """The checkout's short commit, "+dirty" if tracked files differ from it
    ("unknown" outside a git checkout). Long runs read it at start: the code they
    execute is the code they imported then."""
    try:
        run = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True,  # noqa: E731
                                        cwd=Path(__file__).parent).stdout.strip()
        head = run("rev-parse", "--short", "HEAD") or "unknown"
        return head + ("+dirty" if head != "unknown" and run("status", "--porcelain", "--untracked-files=no")
                       else "")
    except OSError:
        return "unknown"
