"""Shared by the benchmark reports: the commit that produced a result, and its
Markdown tables."""
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


def md_table(df) -> str:
    """A pandas DataFrame as a Markdown table (no tabulate dependency), floats to 4 decimals."""
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    rows = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    rows += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(rows)
