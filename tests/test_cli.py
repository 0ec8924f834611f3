"""The d1store command end to end, on SQLite and on the local D1 engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from d1store.cli import main

FAKE_TOKEN = "sekret-token-0123456789abcdef"

CHAT = [
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
    {
        "id": "trip-1",
        "resource_id": "alice",
        "title": "[draft] Lisbon",
        "metadata": {"lang": "pt", "n": 1},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": 'Olá, quero um hotel 🏨 \\ " \u0000 é'},
            {"role": "assistant", "content": {"parts": [1, 1.0, 2**60, None]}, "metadata": {"k": [1]}},
        ],
    },
]


@pytest.fixture
def target(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """Global options that point the command at a fresh store on the current backend."""
    prefix = f"cli_{uuid.uuid4().hex[:8]}_"
    if backend == "sqlite":
        return ["--url", f"sqlite:///{tmp_path / 'cli.db'}", "--table-prefix", prefix]
    if backend == "d1":
        server = request.getfixturevalue("d1store_local_d1")
        return ["--url", server.url, "--table-prefix", prefix]
    pytest.skip("the CLI tests run on local backends only")


def run(*args: str, stdin: str | None = None) -> Result:
    # A wide terminal keeps rich from wrapping table cells across lines.
    return CliRunner().invoke(main, list(args), input=stdin, env={"COLUMNS": "200"}, catch_exceptions=False)


def write_lines(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), "utf-8")
    return path


def export_text(target: list[str], tmp_path: Path, name: str = "out.jsonl") -> str:
    result = run(*target, "export", str(tmp_path / name))
    assert result.exit_code == 0, result.stderr
    return (tmp_path / name).read_text("utf-8")


def test_import_export_roundtrip(target: list[str], tmp_path: Path) -> None:
    source = write_lines(tmp_path / "chat.jsonl", CHAT)
    result = run(*target, "import", str(source))
    assert result.exit_code == 0, result.stderr
    assert "imported 3 threads, 7 messages" in result.stderr

    lines = [json.loads(line) for line in export_text(target, tmp_path).splitlines()]
    assert len(lines) == 3
    by_title = {line["title"]: line for line in lines}
    trip = by_title["[draft] Lisbon"]
    assert trip["id"] == "trip-1"
    assert trip["resource_id"] == "alice"
    assert trip["metadata"] == {"lang": "pt", "n": 1}
    assert [m["content"] for m in trip["messages"]] == [m["content"] for m in CHAT[2]["messages"]]
    assert trip["messages"][2]["metadata"] == {"k": [1]}
    assert isinstance(trip["messages"][2]["content"]["parts"][1], float)


def test_identical_lines_stay_two_threads(target: list[str], tmp_path: Path) -> None:
    run(*target, "import", str(write_lines(tmp_path / "chat.jsonl", CHAT[:2])))
    lines = [json.loads(line) for line in export_text(target, tmp_path).splitlines()]
    assert len(lines) == 2
    assert lines[0]["id"] != lines[1]["id"]
    assert lines[0]["messages"][0]["content"] == lines[1]["messages"][0]["content"] == "Hi"


def test_import_twice_changes_nothing(target: list[str], tmp_path: Path) -> None:
    source = write_lines(tmp_path / "chat.jsonl", CHAT)
    run(*target, "import", str(source))
    first = export_text(target, tmp_path, "first.jsonl")
    again = run(*target, "import", str(source))
    assert again.exit_code == 0, again.stderr
    assert export_text(target, tmp_path, "second.jsonl") == first


def test_export_import_export_identical(target: list[str], tmp_path: Path) -> None:
    run(*target, "import", str(write_lines(tmp_path / "chat.jsonl", CHAT)))
    first = export_text(target, tmp_path, "first.jsonl")
    other = [*target[:-1], target[-1] + "b_"]
    result = run(*other, "import", str(tmp_path / "first.jsonl"))
    assert result.exit_code == 0, result.stderr
    assert export_text(other, tmp_path, "second.jsonl") == first


def test_export_to_stdout(target: list[str], tmp_path: Path) -> None:
    run(*target, "import", str(write_lines(tmp_path / "chat.jsonl", CHAT)))
    result = run(*target, "export", "--resource", "alice", "-")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["trip-1"]


def test_import_from_stdin(target: list[str]) -> None:
    result = run(*target, "import", "-", stdin=json.dumps(CHAT[2]) + "\n")
    assert result.exit_code == 0, result.stderr
    listing = run(*target, "messages", "list", "trip-1", "--json")
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [row["role"] for row in rows] == ["system", "user", "assistant"]


BAD_LINES = [
    ("{not json", "invalid JSON"),
    ('{"messages": [{"role": "bot", "content": "x"}]}', "messages[0].role"),
    ('{"messages": "hello"}', '"messages" must be a list'),
    ('{"title": "no messages"}', 'missing field "messages"'),
    ('{"messages": [], "extra": 1}', "unknown field(s) 'extra'"),
    ('{"messages": [{"role": "user", "content": null}]}', "messages[0].content"),
    ('{"messages": [], "metadata": {"x": NaN}}', "NaN"),
]


@pytest.mark.parametrize(("line", "problem"), BAD_LINES)
def test_import_bad_line_aborts(target: list[str], tmp_path: Path, line: str, problem: str) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps(CHAT[2]) + "\n" + line + "\n" + json.dumps(CHAT[0]) + "\n", "utf-8")
    result = run(*target, "import", str(source))
    assert result.exit_code == 1
    assert "line 2" in result.stderr
    assert problem in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    exported = [json.loads(row)["id"] for row in export_text(target, tmp_path).splitlines()]
    assert exported == ["trip-1"]


def test_import_skip_goes_on(target: list[str], tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    lines = [json.dumps(CHAT[2]), BAD_LINES[1][0], json.dumps(CHAT[0]), "", BAD_LINES[0][0]]
    source.write_text("\n".join(lines) + "\n", "utf-8")
    result = run(*target, "import", "--on-error", "skip", str(source))
    assert result.exit_code == 0, result.stderr
    assert "skipped line 2" in result.stderr
    assert "skipped line 5" in result.stderr
    assert "2 invalid lines skipped" in result.stderr
    assert len(export_text(target, tmp_path).splitlines()) == 2


def test_import_invalid_utf8(target: list[str], tmp_path: Path) -> None:
    source = tmp_path / "latin1.jsonl"
    source.write_bytes(b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n')
    result = run(*target, "import", str(source))
    assert result.exit_code == 1
    assert "line 1: invalid UTF-8" in result.stderr


def test_import_duplicate_id(target: list[str], tmp_path: Path) -> None:
    result = run(*target, "import", str(write_lines(tmp_path / "dup.jsonl", [CHAT[2], CHAT[2]])))
    assert result.exit_code == 1
    assert "line 2: thread id 'trip-1' is already used on line 1" in result.stderr


def test_import_chunks_large_thread(target: list[str], tmp_path: Path) -> None:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(120)]
    source = write_lines(tmp_path / "long.jsonl", [{"id": "long", "messages": messages}, CHAT[0]])
    result = run(*target, "import", "--batch-statements", "10", str(source))
    assert result.exit_code == 0, result.stderr
    first = export_text(target, tmp_path, "first.jsonl")
    long = json.loads(first.splitlines()[0])
    assert [m["content"] for m in long["messages"]] == [f"turn {i}" for i in range(120)]
    run(*target, "import", "--batch-statements", "10", str(source))
    assert export_text(target, tmp_path, "second.jsonl") == first


def test_export_pages_messages(target: list[str], tmp_path: Path) -> None:
    messages = [{"role": "user", "content": f"m{i}"} for i in range(7)]
    run(*target, "import", str(write_lines(tmp_path / "a.jsonl", [{"id": "a", "messages": messages}, *CHAT])))
    whole = export_text(target, tmp_path, "whole.jsonl")
    paged = run(*target, "export", "--thread-page", "2", "--message-page", "3", str(tmp_path / "paged.jsonl"))
    assert paged.exit_code == 0, paged.stderr
    assert (tmp_path / "paged.jsonl").read_text("utf-8") == whole


def test_threads_list(target: list[str], tmp_path: Path) -> None:
    run(*target, "import", str(write_lines(tmp_path / "chat.jsonl", CHAT)))
    table = run(*target, "threads", "list")
    assert table.exit_code == 0, table.stderr
    assert "[draft] Lisbon" in table.stdout
    assert "3 of 3 threads" in table.stdout
    filtered = run(*target, "threads", "list", "--metadata", "lang=pt", "--metadata", "n=1", "--json")
    assert [json.loads(line)["id"] for line in filtered.stdout.splitlines()] == ["trip-1"]
    typed = run(*target, "threads", "list", "--metadata", 'n="1"', "--json")
    assert typed.stdout == ""
    limited = run(*target, "threads", "list", "--limit", "1", "--json")
    assert len(limited.stdout.splitlines()) == 1


def test_messages_list(target: list[str], tmp_path: Path) -> None:
    run(*target, "import", str(write_lines(tmp_path / "chat.jsonl", CHAT)))
    table = run(*target, "messages", "list", "trip-1")
    assert table.exit_code == 0, table.stderr
    assert "Be brief." in table.stdout
    last = run(*target, "messages", "list", "trip-1", "--last", "2", "--json")
    assert [json.loads(line)["role"] for line in last.stdout.splitlines()] == ["user", "assistant"]
    missing = run(*target, "messages", "list", "nope")
    assert missing.exit_code == 1
    assert "thread 'nope' not found" in missing.stderr


def test_doctor(target: list[str]) -> None:
    before = run(*target, "doctor")
    assert before.exit_code == 1
    # A SQLite file that does not exist yet is reported, and not created.
    expected = "does not exist" if target[1].startswith("sqlite") else "missing tables"
    assert expected in before.stderr
    assert "d1store init" in before.stderr
    assert run(*target, "init").exit_code == 0
    after = run(*target, "doctor")
    assert after.exit_code == 0, after.stderr
    assert "reachable:    yes" in after.stdout
    assert "threads 0" in after.stdout
    assert "100 parameters" in after.stdout


def test_copy_is_idempotent(target: list[str], tmp_path: Path) -> None:
    run(*target, "import", str(write_lines(tmp_path / "chat.jsonl", CHAT)))
    source = export_text(target, tmp_path, "source.jsonl")
    backup = f"sqlite:///{tmp_path / 'backup.db'}"
    url, prefix = target[1], target[3]
    for _ in range(2):
        result = run("copy", "--src-prefix", prefix, "--dst-prefix", "bk_", url, backup)
        assert result.exit_code == 0, result.stderr
        assert "copied 3 threads, 7 messages" in result.stderr
        assert export_text(["--url", backup, "--table-prefix", "bk_"], tmp_path, "copy.jsonl") == source


def test_schema_missing_message(target: list[str], tmp_path: Path) -> None:
    result = run(*target, "threads", "list")
    assert result.exit_code == 1
    assert "does not exist: run `d1store init`" in result.stderr


def test_unreadable_file(target: list[str], tmp_path: Path) -> None:
    result = run(*target, "import", str(tmp_path / "missing.jsonl"))
    assert result.exit_code == 1
    assert "missing.jsonl" in result.stderr
    assert "check the path" in result.stderr


# -- bad configuration, through the installed command ----------------------


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("D1STORE_", "CLOUDFLARE_"))
    }
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "d1store.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_unreachable_d1_hides_token(tmp_path: Path) -> None:
    # Port 9 on loopback (discard) has no listener on a normal machine.
    url = f"cloudflare_d1://acct:{FAKE_TOKEN}@db?base_url=http%3A%2F%2F127.0.0.1%3A9&max_attempts=2"
    for args in (["--url", url, "doctor"], ["--url", url, "threads", "list"]):
        result = cli(*args)
        assert result.returncode == 1
        assert FAKE_TOKEN not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0
        assert "Connection refused" in result.stderr
        assert "check --url / D1STORE_URL" in result.stderr


def test_missing_credentials(tmp_path: Path) -> None:
    result = cli("threads", "list", env={"CLOUDFLARE_API_TOKEN": FAKE_TOKEN}, cwd=tmp_path)
    assert result.returncode == 1
    assert "CLOUDFLARE_ACCOUNT_ID" in result.stderr
    assert "CLOUDFLARE_D1_DATABASE_ID" in result.stderr
    assert FAKE_TOKEN not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_traceback(tmp_path: Path) -> None:
    result = cli("--url", f"sqlite:///{tmp_path / 'x.db'}", "--debug", "threads", "list")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "SchemaNotInitializedError" in result.stderr


def test_d1_token_never_printed(d1store_local_d1: object, tmp_path: Path) -> None:
    # A wrong token against a running server: the error must not echo it.
    server = d1store_local_d1
    base_url = server.base_url  # type: ignore[attr-defined]
    from urllib.parse import quote

    url = f"cloudflare_d1://acct:{FAKE_TOKEN}@db?base_url={quote(base_url, safe='')}&max_attempts=1"
    result = cli("--url", url, "--table-prefix", "cli_token_", "doctor")
    assert FAKE_TOKEN not in result.stdout + result.stderr
    assert "***" in result.stdout or result.returncode == 1


def test_help_on_every_command() -> None:
    commands = [
        [],
        ["init"],
        ["doctor"],
        ["threads", "list"],
        ["messages", "list"],
        ["export"],
        ["import"],
        ["copy"],
        ["local-d1"],
    ]
    for command in commands:
        result = run(*command, "--help")
        assert result.exit_code == 0, command
        assert "Usage:" in result.stdout


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert "d1store" in result.stdout


def test_doctor_leaves_missing_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    result = run("--url", f"sqlite:///{path}", "doctor")
    assert result.exit_code == 1
    assert "does not exist" in result.stderr
    assert not path.exists()


def test_unopenable_sqlite_is_one_line(tmp_path: Path) -> None:
    result = run("--url", f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}", "threads", "list")
    assert result.exit_code == 1
    assert "unable to open database file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_summary_uses_singular(tmp_path: Path, target: list[str]) -> None:
    source = write_lines(tmp_path / "one.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    result = run(*target, "import", str(source))
    assert result.exit_code == 0, result.stderr
    assert "imported 1 thread, 1 message in" in result.stderr


def test_archived_thread_survives_round_trip(target: list[str], tmp_path: Path) -> None:
    line = {
        "id": "arch-1",
        "resource_id": "alice",
        "archived_at": "2026-02-03T04:05:06.000007Z",
        "messages": [{"role": "user", "content": "old news"}],
    }
    assert run(*target, "import", str(write_lines(tmp_path / "a.jsonl", [line]))).exit_code == 0
    exported = json.loads(export_text(target, tmp_path))
    assert exported["archived_at"] == "2026-02-03T04:05:06.000007Z"
    listed = run(*target, "threads", "list", "--json")
    assert json.loads(listed.stdout.splitlines()[0])["archived_at"] == "2026-02-03T04:05:06.000007Z"
