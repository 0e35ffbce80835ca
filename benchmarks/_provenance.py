"""Shared by the benchmark reports: the commit that produced a result, its Markdown
tables, and its figures."""
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


def save_figure(fig, path, ran_on: str, dpi: int = 110) -> None:
    """Saves a matplotlib figure as PNG with `ran_on` (the CPU model, kernel path and what
    else tells its figures apart from another machine's) in the file's Description, so the
    file names its machine even where its drawn title is not read (a text tool, a crop)."""
    fig.savefig(path, dpi=dpi, metadata={"Description": ran_on})
