"""Tests of the local D1 server (workerd through Miniflare) and its Python launcher.

These start real servers on loopback, and nothing is mocked. The first run installs
the pinned npm packages into the d1store cache directory.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from d1store.local_d1 import (
    LOCAL_API_TOKEN,
    LocalD1Error,
    LocalD1Server,
    ensure_installed,
    ensure_server_script,
)
from d1store.testing import local_d1

REPO_ROOT = Path(__file__).resolve().parent.parent
_table_numbers = itertools.count()


def new_table_name() -> str:
    return f"t_{os.getpid()}_{next(_table_numbers)}"


@pytest.fixture
def client(d1store_local_d1: LocalD1Server) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {d1store_local_d1.api_token}"}
    with httpx.Client(base_url=d1store_local_d1.base_url, headers=headers, timeout=30) as http:
        yield http


@pytest.fixture
def table(client: httpx.Client) -> str:
    name = new_table_name()
    response = client.post("/query", json={"sql": f"CREATE TABLE {name} (id TEXT PRIMARY KEY, v INTEGER)"})
    assert response.status_code == 200, response.text
    return name


def ok_result(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["errors"] == []
    assert body["messages"] == []
    result: list[dict[str, Any]] = body["result"]
    return result


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["result"] == []
    assert len(body["errors"]) == 1
    error: dict[str, Any] = body["errors"][0]
    return error


def ids_in(client: httpx.Client, table: str) -> list[str]:
    result = ok_result(client.post("/raw", json={"sql": f"SELECT id FROM {table} ORDER BY id"}))
    return [row[0] for row in result[0]["results"]["rows"]]


def group_processes(group: int) -> dict[int, str]:
    """Map pid to command name for the live (non-zombie) processes of a group."""
    members: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == group and fields[0] != "Z":
            members[int(entry.name)] = name
    return members


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


# -- REST API shape ----------------------------------------------------------


def test_raw_single_statement(client: httpx.Client, table: str) -> None:
    result = ok_result(
        client.post(
            "/raw",
            json={"sql": f"INSERT INTO {table} VALUES (?, ?)", "params": ["a", 1]},
        )
    )
    assert len(result) == 1
    assert result[0]["success"] is True
    assert result[0]["meta"]["changes"] == 1
    assert result[0]["meta"]["rows_written"] >= 1

    result = ok_result(
        client.post("/raw", json={"sql": f"SELECT id, v, ? AS p FROM {table}", "params": [None]})
    )
    assert result[0]["results"] == {
        "columns": ["id", "v", "p"],
        "rows": [["a", 1, None]],
    }


def test_raw_keeps_columns_of_empty_result(client: httpx.Client, table: str) -> None:
    result = ok_result(
        client.post(
            "/raw",
            json={"sql": f"SELECT v, id FROM {table} WHERE id = ?", "params": ["none"]},
        )
    )
    assert result[0]["results"] == {"columns": ["v", "id"], "rows": []}


def test_raw_keeps_duplicate_columns(client: httpx.Client) -> None:
    result = ok_result(client.post("/raw", json={"sql": "SELECT 'x' AS a, 1, 2 AS a"}))
    assert result[0]["results"] == {"columns": ["a", "1", "a"], "rows": [["x", 1, 2]]}


def test_query_single_statement(client: httpx.Client, table: str) -> None:
    result = ok_result(client.post("/query", json={"sql": f"INSERT INTO {table} VALUES ('a', 1), ('b', 2)"}))
    meta = result[0]["meta"]
    assert meta["changes"] == 2
    assert meta["last_row_id"] > 0
    for key in ("duration", "rows_read", "rows_written", "size_after", "changed_db"):
        assert key in meta

    result = ok_result(client.post("/query", json={"sql": f"SELECT id, v FROM {table} ORDER BY id"}))
    assert result[0]["results"] == [{"id": "a", "v": 1}, {"id": "b", "v": 2}]


def test_batch_returns_result_per_statement(client: httpx.Client, table: str) -> None:
    batch = [
        {"sql": f"INSERT INTO {table} VALUES (?, ?)", "params": ["a", 1]},
        {"sql": f"INSERT INTO {table} VALUES (?, ?)", "params": ["b", 2]},
        {"sql": f"SELECT id FROM {table} WHERE v > ?", "params": [1]},
    ]
    result = ok_result(client.post("/raw", json={"batch": batch}))
    assert len(result) == 3
    assert result[0]["meta"]["changes"] == 1
    assert result[2]["results"] == {"columns": ["id"], "rows": [["b"]]}

    result = ok_result(client.post("/query", json={"batch": [{"sql": f"SELECT count(*) AS n FROM {table}"}]}))
    assert result[0]["results"] == [{"n": 2}]


@pytest.mark.parametrize("endpoint", ["/raw", "/query"])
def test_failing_batch_rolls_back(client: httpx.Client, table: str, endpoint: str) -> None:
    ok_result(client.post("/raw", json={"sql": f"INSERT INTO {table} VALUES ('a', 1)"}))
    batch = [
        {"sql": f"INSERT INTO {table} VALUES (?, ?)", "params": ["b", 2]},
        {"sql": f"UPDATE {table} SET v = 99 WHERE id = 'a'"},
        {"sql": f"INSERT INTO {table} VALUES (?, ?)", "params": ["a", 3]},
    ]
    error = error_of(client.post(endpoint, json={"batch": batch}), 400)
    assert error["code"] == 7500
    assert error["message"].startswith(f"D1_ERROR: UNIQUE constraint failed: {table}.id")

    assert ids_in(client, table) == ["a"]
    result = ok_result(client.post("/query", json={"sql": f"SELECT v FROM {table}"}))
    assert result[0]["results"] == [{"v": 1}]


def test_error_envelope_has_d1_message(client: httpx.Client, table: str) -> None:
    ok_result(client.post("/raw", json={"sql": f"INSERT INTO {table} VALUES ('a', 1)"}))
    error = error_of(client.post("/raw", json={"sql": f"INSERT INTO {table} VALUES ('a', 2)"}), 400)
    assert error["code"] == 7500
    assert error["message"] == (
        f"D1_ERROR: UNIQUE constraint failed: {table}.id: SQLITE_CONSTRAINT "
        "(extended: SQLITE_CONSTRAINT_PRIMARYKEY)"
    )

    error = error_of(client.post("/query", json={"sql": "SELECT 1 FROM no_such_table"}), 400)
    assert error == {
        "code": 7500,
        "message": "D1_ERROR: no such table: no_such_table: SQLITE_ERROR",
    }


def test_guard_error_rolls_back_batch(client: httpx.Client, table: str) -> None:
    guard = (
        f"SELECT CASE WHEN EXISTS (SELECT 1 FROM {table} WHERE id = ?) "
        "THEN 1 ELSE json_extract('{}', ?) END"
    )
    batch: list[dict[str, Any]] = [
        {"sql": f"INSERT INTO {table} VALUES ('a', 1)"},
        {"sql": guard, "params": ["missing", "d1store-guard:3"]},
    ]
    error = error_of(client.post("/raw", json={"batch": batch}), 400)
    assert error["code"] == 7500
    assert error["message"] == "D1_ERROR: bad JSON path: 'd1store-guard:3': SQLITE_ERROR"
    assert ids_in(client, table) == []

    batch[1]["params"] = ["a", "d1store-guard:3"]
    result = ok_result(client.post("/raw", json={"batch": batch}))
    assert result[1]["results"]["rows"] == [[1]]


@pytest.mark.parametrize("sql", ["BEGIN", "BEGIN TRANSACTION", "SAVEPOINT s1"])
def test_transaction_statements_rejected(client: httpx.Client, sql: str) -> None:
    error = error_of(client.post("/raw", json={"sql": sql}), 400)
    assert error["code"] == 7500
    assert "BEGIN TRANSACTION or SAVEPOINT" in error["message"]


def test_multiple_statements_split(client: httpx.Client, table: str) -> None:
    sql = f"INSERT INTO {table} VALUES ('a;b', 1); -- x; y\n SELECT id FROM {table}; /* ; */"
    result = ok_result(client.post("/raw", json={"sql": sql}))
    assert len(result) == 2
    assert result[1]["results"] == {"columns": ["id"], "rows": [["a;b"]]}


def test_trigger_body_stays_one_statement(client: httpx.Client, table: str) -> None:
    log = new_table_name()
    sql = (
        f"CREATE TABLE {log} (id TEXT);"
        f"CREATE TRIGGER {log}_trg AFTER INSERT ON {table} BEGIN "
        f"INSERT INTO {log} VALUES (CASE WHEN new.v > 0 THEN new.id ELSE 'neg' END); "
        f"INSERT INTO {log} VALUES ('second'); END;"
        f"INSERT INTO {table} VALUES ('a', 1)"
    )
    result = ok_result(client.post("/query", json={"sql": sql}))
    assert len(result) == 3
    assert ids_in(client, log) == ["a", "second"]


def test_multi_statement_params_rejected(client: httpx.Client) -> None:
    error = error_of(client.post("/raw", json={"sql": "SELECT ?; SELECT 2", "params": [1]}), 400)
    assert error == {
        "code": 7400,
        "message": "params with multiple statements is not supported",
    }


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"{}", "sql is missing"),
        (b'{"sql": 1}', "sql is missing or is not a string"),
        (b'{"sql": "SELECT ?", "params": "a"}', "params must be an array"),
        (b'{"sql": "SELECT ?", "params": [{"a": 1}]}', "params[0] must be"),
        (b'{"batch": []}', "non-empty array"),
        (b'{"batch": [{"params": []}]}', "batch[0]: sql is missing"),
        (b'{"sql": "SELECT 1", "batch": [{"sql": "SELECT 1"}]}', "both sql and batch"),
    ],
)
def test_malformed_request_rejected(client: httpx.Client, body: bytes, fragment: str) -> None:
    error = error_of(client.post("/raw", content=body), 400)
    assert error["code"] == 7400
    assert fragment in error["message"]


def test_routes_methods_and_auth(d1store_local_d1: LocalD1Server) -> None:
    server = d1store_local_d1
    origin = f"http://127.0.0.1:{server.port}"
    auth = {"Authorization": f"Bearer {server.api_token}"}
    body = {"sql": "SELECT 1"}

    cases = [
        (
            "POST",
            f"{origin}/client/v4/accounts/{server.account_id}/d1/database/{server.database_id}/nope",
            auth,
            404,
        ),
        (
            "POST",
            f"{origin}/client/v4/accounts/other/d1/database/{server.database_id}/raw",
            auth,
            404,
        ),
        (
            "POST",
            f"{origin}/client/v4/accounts/{server.account_id}/d1/database/other/raw",
            auth,
            404,
        ),
        ("POST", f"{origin}/", auth, 404),
        ("GET", f"{server.base_url}/raw", auth, 405),
        ("POST", f"{server.base_url}/raw", {}, 401),
        ("POST", f"{server.base_url}/raw", {"Authorization": "Bearer"}, 401),
        ("POST", f"{server.base_url}/raw", {"Authorization": "Basic abc"}, 401),
    ]
    with httpx.Client(timeout=30) as http:
        for method, url, headers, status in cases:
            response = http.request(method, url, headers=headers, json=body)
            assert response.status_code == status, (method, url, response.text)
            envelope = response.json()
            assert envelope["success"] is False, url
            assert envelope["errors"][0]["message"], url
        response = http.get(f"{server.base_url}/raw", headers=auth)
        assert response.headers["allow"] == "POST"


# -- process lifecycle -------------------------------------------------------


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point tempfile at an empty directory, so a test can list what a server leaves there."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def leftovers(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


def test_stop_leaves_no_processes(private_tmp: Path) -> None:
    server = LocalD1Server().start()
    assert leftovers(private_tmp) != []
    group = server.pid
    members = group_processes(group)
    assert members.get(group) == "node"
    assert "workerd" in members.values()

    server.stop()

    assert server.process is None
    for pid in members:
        assert not pid_alive(pid), f"{members[pid]} (pid {pid}) is still running"
    assert group_processes(group) == {}
    assert leftovers(private_tmp) == []
    server.stop()  # stopping twice is a no-op


def test_stdin_eof_stops_server(private_tmp: Path) -> None:
    server = LocalD1Server().start()
    process = server.process
    assert process is not None and process.stdin is not None
    members = group_processes(server.pid)

    process.stdin.close()

    assert process.wait(timeout=10) == 0
    assert wait_until(lambda: not any(pid_alive(pid) for pid in members), timeout=5)
    # Node deletes Miniflare's storage itself, leaving only the empty scratch directory.
    assert len(leftovers(private_tmp)) == 1
    server.stop()
    assert leftovers(private_tmp) == []


def test_stop_kills_orphaned_workerd(private_tmp: Path) -> None:
    server = LocalD1Server().start()
    process = server.process
    assert process is not None
    members = group_processes(server.pid)

    # SIGKILL skips node's shutdown, so workerd survives until stop() kills the group.
    os.kill(server.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert any(pid_alive(pid) for pid in members if members[pid] == "workerd")

    server.stop()
    assert not any(pid_alive(pid) for pid in members)
    assert leftovers(private_tmp) == []


def test_persist_keeps_data(tmp_path: Path) -> None:
    data = tmp_path / "d1"
    with local_d1(persist=data) as server:
        headers = {"Authorization": f"Bearer {server.api_token}"}
        response = httpx.post(
            f"{server.base_url}/query",
            headers=headers,
            json={
                "batch": [
                    {"sql": "CREATE TABLE kept (id INTEGER)"},
                    {"sql": "INSERT INTO kept VALUES (7)"},
                ]
            },
        )
        ok_result(response)
    assert any(data.rglob("*.sqlite"))

    with local_d1(persist=data) as server:
        headers = {"Authorization": f"Bearer {server.api_token}"}
        response = httpx.post(
            f"{server.base_url}/raw",
            headers=headers,
            json={"sql": "SELECT id FROM kept"},
        )
        assert ok_result(response)[0]["results"]["rows"] == [[7]]


def test_in_memory_database_starts_empty(d1store_local_d1: LocalD1Server) -> None:
    with local_d1() as server:
        assert server.port != d1store_local_d1.port
        headers = {"Authorization": f"Bearer {server.api_token}"}
        response = httpx.post(
            f"{server.base_url}/raw",
            headers=headers,
            json={
                "sql": (
                    "SELECT name FROM sqlite_schema WHERE type = 'table' "
                    "AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\'"
                )
            },
        )
        assert ok_result(response)[0]["results"]["rows"] == []


def test_repr_hides_token(d1store_local_d1: LocalD1Server) -> None:
    server = d1store_local_d1
    assert server.api_token == LOCAL_API_TOKEN
    assert LOCAL_API_TOKEN not in repr(server)
    assert server.base_url in repr(server)
    assert LOCAL_API_TOKEN not in repr(LocalD1Server())


def test_url_points_at_server(d1store_local_d1: LocalD1Server) -> None:
    server = d1store_local_d1
    prefix = f"cloudflare_d1://{server.account_id}:{server.api_token}@{server.database_id}?base_url="
    assert server.url.startswith(prefix)
    assert httpx.URL(server.url).params["base_url"] == server.base_url
    assert server.base_url == (
        f"http://127.0.0.1:{server.port}/client/v4/accounts/local-account/d1/database/local-database"
    )


def _listening_inodes() -> dict[str, tuple[str, int]]:
    """Map socket inode to (local address in hex, port) for listening TCP sockets."""
    listening: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A":  # TCP_LISTEN
                listening[fields[9]] = (address, int(port, 16))
    return listening


def test_listens_only_on_loopback(d1store_local_d1: LocalD1Server) -> None:
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1
    listening = _listening_inodes()
    found: list[tuple[str, int]] = []
    for pid in group_processes(d1store_local_d1.pid):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            inode = target.removeprefix("socket:[").removesuffix("]")
            if target.startswith("socket:[") and inode in listening:
                found.append(listening[inode])
    assert ("0100007F", d1store_local_d1.port) in found, found
    for address, port in found:
        assert address in loopback, f"port {port} listens on {address}"


def _ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback (::1) here")
def test_ipv6_loopback_host() -> None:
    with LocalD1Server(host="::1") as server:
        assert server.base_url.startswith(f"http://[::1]:{server.port}/")
        response = httpx.post(
            f"{server.base_url}/raw",
            headers={"Authorization": f"Bearer {server.api_token}"},
            json={"sql": "SELECT 1 AS one"},
        )
        assert ok_result(response)[0]["results"] == {"columns": ["one"], "rows": [[1]]}


def test_non_loopback_host_rejected() -> None:
    with pytest.raises(ValueError, match=r"'0\.0\.0\.0'"):
        LocalD1Server(host="0.0.0.0")

    script = ensure_server_script()
    completed = subprocess.run(
        ["node", str(script), "--host", "0.0.0.0"],
        check=False,
        cwd=script.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert "only 127.0.0.1 or ::1" in completed.stderr


def test_ensure_installed_is_idempotent() -> None:
    first = ensure_installed()
    assert ensure_installed() == first
    assert (first / "node_modules" / "miniflare" / "package.json").is_file()


def test_missing_node_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("D1STORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalD1Error, match="'node' was not found on PATH"):
        ensure_installed()


def test_module_cli_serves_until_sigint() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "d1store.local_d1", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert set(ready) >= {"base_url", "port", "pid", "url"}
        response = httpx.post(
            f"{ready['base_url']}/raw",
            headers={"Authorization": f"Bearer {ready['api_token']}"},
            json={"sql": "SELECT 1 AS one"},
        )
        assert ok_result(response)[0]["results"] == {"columns": ["one"], "rows": [[1]]}

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
        assert wait_until(lambda: group_processes(ready["pid"]) == {}, timeout=5)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_busy_port_is_one_line(d1store_local_d1: LocalD1Server) -> None:
    port = int(d1store_local_d1.base_url.split(":")[2].split("/")[0])
    result = subprocess.run(
        [sys.executable, "-m", "d1store.local_d1", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"d1store local-d1: port {port} on 127.0.0.1 is already in use; "
        "choose another --port (0 picks a free one)"
    )
    assert result.stdout == ""
