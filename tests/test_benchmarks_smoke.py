"""The benchmark runner still runs: tiny sizes, SQLite only, and the shape of its output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run as bench
from benchmarks.compare import compare_sqlite
from benchmarks.contenders import CONTENDERS

TINY = bench.Sizes(
    messages=20,
    runs=1,
    scale_small=50,
    scale_large=200,
    d1_scale_large=200,
    scale_runs=1,
    export_small=20,
    export_large=60,
)


@pytest.fixture(scope="module")
def results() -> dict[str, object]:
    return bench.run(TINY, ("compare", "requests", "scale"), use_d1=False)


def test_compare_rows(results: dict[str, object]) -> None:
    rows = results["compare"]
    assert isinstance(rows, list)
    assert [row["name"] for row in rows] == [spec.name for spec in CONTENDERS]
    floor, d1store = rows[0], rows[1]
    assert floor["write_ratio"] == 1.0
    assert floor["read_ratio"] == 1.0
    for row in (floor, d1store):
        assert row["write_ms"] > 0
        assert row["read_ms"] > 0
    for row in rows[2:]:
        assert "skipped" in row or row["write_ratio"] > 0


def test_compare_only_floor() -> None:
    rows = compare_sqlite(5, 1, only=("sqlite3 floor",))
    assert [row["name"] for row in rows] == ["sqlite3 floor"]


def test_requests_one_per_call(results: dict[str, object]) -> None:
    sections = results["requests"]
    assert isinstance(sections, list)
    calls = sections[0]["calls"]
    assert {row["call"] for row in calls} >= {
        "messages.save (250)",
        "threads.list",
        "session commit (4 writes)",
    }
    assert [row for row in calls if row["requests"] != 1] == []
    bulk = sections[0]["bulk_save"]
    assert bulk["messages"] == TINY.messages
    assert bulk["ratio"] > 0


def test_scale_rows(results: dict[str, object]) -> None:
    rows = results["scale"]
    assert isinstance(rows, list)
    assert len(rows) == 2
    for row in rows:
        assert row["backend"] == "sqlite"
        assert (row["small_n"], row["large_n"]) == (50, 200)
        assert row["ratio"] == pytest.approx(row["large_ms"] / row["small_ms"], rel=0.05)


def test_report_and_json(results: dict[str, object], tmp_path: Path) -> None:
    text = bench.render(results)
    assert "sqlite3 floor" in text
    assert "Requests per call (sqlite; goal: 1)" in text
    assert "Machine:" in text
    output = tmp_path / "results" / "latest.json"
    bench.write_json(output, results)
    loaded = json.loads(output.read_text())
    assert loaded["compare"][0]["name"] == "sqlite3 floor"
    assert loaded["machine"]["cores"] >= 1


def test_main_quick_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out.json"
    status = bench.main(["--quick", "--no-d1", "--sections", "requests", "--output", str(output)])
    assert status == 0
    assert "wrote" in capsys.readouterr().out
    assert json.loads(output.read_text())["sections"] == ["requests"]
