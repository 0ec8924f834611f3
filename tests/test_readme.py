"""The README quickstart runs exactly as printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quickstart() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "README has no quickstart code block"
    return match.group(1)


def test_quickstart_is_short() -> None:
    assert len(quickstart().strip().splitlines()) <= 25


def test_quickstart_runs_as_printed(tmp_path: Path) -> None:
    script = tmp_path / "quickstart.py"
    script.write_text(quickstart(), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "user: Find me a hotel",
        "assistant: Here are three options",
        "1 ['Trip to Lisbon']",
    ]
    assert (tmp_path / "d1store.db").exists()


def test_example_file_matches_readme() -> None:
    example = (ROOT / "examples" / "quickstart.py").read_text(encoding="utf-8")
    assert quickstart() in example
