"""The API token never appears in output, logs, errors, tracebacks or reprs.

Every library error path and every CLI command runs with a recognisable
fake token against the local D1 server, the fault proxy or a closed
loopback port. Logs are captured at DEBUG on the root logger, so records of
d1store, httpx and httpcore are all checked.
"""

from __future__ import annotations

import json
import logging
import socket
import traceback
import types
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import click
import pytest
from click.testing import CliRunner, Result

from d1store import D1Store, D1StoreError, Message, Thread
from d1store.backends.d1 import RetryPolicy
from d1store.cli import main
from d1store.cli.app import AppState
from d1store.local_d1 import LocalD1Server
from d1store.testing.fault_proxy import RESET_AFTER, RESET_BEFORE, Fault, FaultProxy, status

TOKEN = "tok-SECRET-9f8e7d"
NO_SLEEP = RetryPolicy(max_attempts=2, sleep=lambda _: None)
# Variables that would otherwise choose the database of a CLI run.
CLEAN_ENV: dict[str, str | None] = {
    name: None
    for name in (
        "D1STORE_URL",
        "D1STORE_TABLE_PREFIX",
        "CLOUDFLARE_ACCOUNT_ID",
        "CLOUDFLARE_D1_DATABASE_ID",
        "CLOUDFLARE_API_TOKEN",
        "CF_D1_BASE_URL",
    )
}


def d1_url(base_url: str, **query: str) -> str:
    extra = "".join(f"&{key}={value}" for key, value in query.items())
    return f"cloudflare_d1://acct:{TOKEN}@db?base_url={quote(base_url, safe='')}{extra}"


def closed_port() -> int:
    """Return a loopback port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def texts_of_error(error: BaseException) -> list[str]:
    return [str(error), repr(error), "".join(traceback.format_exception(error)), repr(error.args)]


def texts_of_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return [formatter.format(record) for record in caplog.records] + [
        repr(record.args) for record in caplog.records
    ]


def reachable_reprs(root: object, limit: int = 20_000) -> Iterator[tuple[str, str]]:
    """Yield (path, repr) of every object reachable from ``root`` through attributes and containers.

    Strings are not yielded themselves: the client must keep the token
    somewhere. Containers are walked but not yielded, since their repr
    shows the strings they hold.
    """
    seen: set[int] = set()
    queue: list[tuple[str, object]] = [("store", root)]
    while queue and len(seen) < limit:
        path, value = queue.pop()
        if id(value) in seen or isinstance(value, (str, bytes, int, float, bool, type(None))):
            continue
        seen.add(id(value))
        if isinstance(
            value, (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType)
        ):
            continue
        if isinstance(value, dict):
            queue.extend((f"{path}[{key!r}]", item) for key, item in value.items())
            continue
        if isinstance(value, (list, tuple, set, frozenset, deque)):
            queue.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
            continue
        if type(value).__module__.startswith(("sqlalchemy", "pydantic", "logging", "threading")):
            # Large library object graphs: their own repr is checked, their attributes are not walked.
            yield path, repr(value)
            continue
        yield path, repr(value)
        attributes = dict(getattr(value, "__dict__", {}))
        for slot in getattr(type(value), "__slots__", ()):
            if hasattr(value, slot):
                attributes[slot] = getattr(value, slot)
        queue.extend((f"{path}.{name}", item) for name, item in attributes.items())


def assert_no_token(texts: list[str], where: str) -> None:
    leaked = [text for text in texts if TOKEN in text]
    assert leaked == [], f"token in {where}: {leaked[0][:300] if leaked else ''}"


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="d1store")
    return caplog


@pytest.fixture
def proxy(d1store_local_d1: LocalD1Server) -> Iterator[FaultProxy]:
    with FaultProxy(d1store_local_d1.base_url, timeout=10) as running:
        yield running


def unique_prefix(request: pytest.FixtureRequest) -> str:
    return f"sec{abs(hash(request.node.nodeid)) % 10**8}_"


# Library


BAD_URLS = [
    f"cloudflare_d1://acct:{TOKEN}@",
    f"cloudflare_d1://:{TOKEN}@db",
    f"cloudflare_d1://acct:{TOKEN}@db?bogus=1",
    f"cloudflare_d1://acct:{TOKEN}@db?timeout=abc",
    f"cloudflare_d1://acct:{TOKEN}@db?timeout=-1",
    f"cloudflare_d1://acct:{TOKEN}@db?base_url=a&base_url=b",
    f"cloudflare_d1://acct:{TOKEN}@db?base_url=ftp%3A%2F%2Fx",
    f"cloudflare_d1://acct:{TOKEN}@db:notaport",
    f"postgresql://acct:{TOKEN}@db",
    f"sqlite://acct:{TOKEN}@/x.db",
    TOKEN,
    f"{TOKEN}:{TOKEN}",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_url_hides_token(url: str, debug_logs: pytest.LogCaptureFixture) -> None:
    with pytest.raises(Exception) as caught:
        D1Store(url)
    assert isinstance(caught.value, ValueError), f"{type(caught.value).__name__} is not a clear input error"
    assert_no_token(texts_of_error(caught.value), "the error")
    assert_no_token(texts_of_logs(debug_logs), "the log")


def test_token_env_without_url_hides_token(debug_logs: pytest.LogCaptureFixture) -> None:
    env = {"CLOUDFLARE_API_TOKEN": TOKEN, "CLOUDFLARE_ACCOUNT_ID": "acct"}
    with pytest.raises(D1StoreError) as caught:
        D1Store.from_env(env)
    assert_no_token(texts_of_error(caught.value), "the error")


def failing_calls() -> dict[str, Callable[[D1Store], object]]:
    return {
        "save": lambda store: store.threads.save(Thread(id="t", resource_id="r")),
        "read": lambda store: store.threads.get("t"),
        "session": lambda store: _session_write(store),
    }


def _session_write(store: D1Store) -> None:
    with store.session() as session:
        session.threads.save(Thread(id="t", resource_id="r"))
        session.messages.save([Message(id="m", thread_id="t", role="user", content="x")])


FAULTS: dict[str, list[Fault]] = {
    "401": [status(401)] * 2,
    "429 give-up": [status(429, retry_after=0)] * 2,
    "500": [status(500)] * 2,
    "503 give-up": [status(503)] * 2,
    "reset before": [RESET_BEFORE] * 2,
    "reset after": [RESET_AFTER] * 2,
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("call", sorted(failing_calls()))
def test_d1_failures_hide_token(
    proxy: FaultProxy,
    fault: str,
    call: str,
    debug_logs: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    with D1Store(d1_url(proxy.base_url), table_prefix=unique_prefix(request), retry=NO_SLEEP) as store:
        store.init()
        proxy.enqueue(*FAULTS[fault])
        with pytest.raises(D1StoreError) as caught:
            failing_calls()[call](store)
        assert_no_token(texts_of_error(caught.value), "the error")
        assert_no_token([text for _, text in reachable_reprs(store)], "a repr")
    assert_no_token(texts_of_logs(debug_logs), "the log")
    output = capsys.readouterr()
    assert_no_token([output.out, output.err], "the output")


def test_unreachable_d1_hides_token(debug_logs: pytest.LogCaptureFixture) -> None:
    url = d1_url(f"http://127.0.0.1:{closed_port()}/client/v4/accounts/a/d1/database/d")
    with D1Store(url, retry=NO_SLEEP) as store, pytest.raises(D1StoreError) as caught:
        store.threads.get("t")
    assert "request to D1 failed" in str(caught.value)
    assert_no_token(texts_of_error(caught.value), "the error")
    assert_no_token(texts_of_logs(debug_logs), "the log")


def test_input_errors_hide_token(
    d1store_local_d1: LocalD1Server, debug_logs: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    url = d1_url(d1store_local_d1.base_url)
    prefix = unique_prefix(request)
    errors: list[BaseException] = []
    with D1Store(url, table_prefix=prefix + "missing_") as bare:
        try:
            bare.threads.get("t")  # schema missing
        except D1StoreError as exc:
            errors.append(exc)
    with D1Store(url, table_prefix=prefix, max_row_bytes=100) as store:
        store.init()
        store.threads.save(Thread(id="t", resource_id="r"))
        calls: list[Callable[[], object]] = [
            lambda: store.threads.save(Thread(id="t", resource_id="r", title="x" * 200)),  # row too large
            lambda: store.messages.save([{"id": "m", "thread_id": "t", "role": "robot", "content": "x"}]),
            lambda: store.messages.save([{"id": "m", "thread_id": "nope", "role": "user", "content": "x"}]),
            lambda: store.threads.update("nope", title="x"),
            lambda: store.threads.list(per_page=-1),
        ]
        for call in calls:
            try:
                call()
            except ValueError as exc:
                errors.append(exc)
            except LookupError as exc:
                errors.append(exc)
        with store.session() as session:
            session.threads.save(Thread(id="t2", resource_id="r"))
            assert_no_token([text for _, text in reachable_reprs(session)], "a session repr")
        assert_no_token([text for _, text in reachable_reprs(store)], "a repr")
    assert len(errors) == 6
    for error in errors:
        assert_no_token(texts_of_error(error), "the error")
    assert_no_token(texts_of_logs(debug_logs), "the log")


def test_walker_finds_planted_token() -> None:
    class Holder:
        def __init__(self) -> None:
            self.inner = [{"x": self.Leaky()}]

        class Leaky:
            def __repr__(self) -> str:
                return f"Leaky({TOKEN})"

    texts = [text for _, text in reachable_reprs(Holder())]
    with pytest.raises(AssertionError):
        assert_no_token(texts, "a repr")


def test_cli_state_repr_hides_token() -> None:
    state = AppState(url=d1_url("http://127.0.0.1:9/x"))
    state.remember(state.url or "")
    assert TOKEN in state.secrets
    assert TOKEN not in repr(state)


# CLI


def leaf_commands(group: click.Group, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found |= leaf_commands(command, (*path, name))
        else:
            found.add((*path, name))
    return found


def cli_runs(url: str, prefix: str, tmp: Path) -> list[list[str]]:
    """Return one invocation of every CLI command, in an order that works on an empty prefix."""
    source = tmp / "in.jsonl"
    record = {"id": "t1", "resource_id": "r", "messages": [{"id": "m1", "role": "user", "content": "hi"}]}
    source.write_text(json.dumps(record) + "\n")
    attachments = tmp / "attachments"
    attachments.mkdir(exist_ok=True)
    return [
        ["db", "upgrade"],
        ["db", "current"],
        ["db", "history"],
        ["db", "downgrade", "base"],
        ["init"],
        ["db", "stamp", "head"],
        ["import", str(source)],
        ["threads", "list"],
        ["threads", "list", "--json"],
        ["messages", "list", "t1"],
        ["export", str(tmp / "out.jsonl")],
        ["copy", url, f"sqlite:///{tmp / 'copy.db'}", "--src-prefix", prefix, "--init"],
        ["doctor"],
        ["attachments", "gc", "--dir", str(attachments), "--dry-run"],
        ["local-d1", "--help"],
    ]


def invoke(arguments: list[str], url: str, prefix: str, debug: bool) -> Result:
    options = ["--url", url, "--table-prefix", prefix] + (["--debug"] if debug else [])
    return CliRunner().invoke(main, [*options, *arguments], env=CLEAN_ENV, catch_exceptions=True)


def check_result(result: Result, label: str) -> None:
    texts = [result.stdout, result.stderr, result.output]
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        texts += texts_of_error(result.exc_info[1])
    assert_no_token(texts, label)


def test_cli_covers_every_command(tmp_path: Path) -> None:
    covered = set()
    for arguments in cli_runs("sqlite://", "p_", tmp_path):
        for size in range(len(arguments), 0, -1):
            if tuple(arguments[:size]) in leaf_commands(main):
                covered.add(tuple(arguments[:size]))
                break
    assert covered == leaf_commands(main), "add the new command to cli_runs()"


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_cli_commands_hide_token(
    d1store_local_d1: LocalD1Server,
    proxy: FaultProxy,
    tmp_path: Path,
    debug: bool,
    debug_logs: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    prefix = unique_prefix(request)
    good = d1_url(d1store_local_d1.base_url)
    unreachable = d1_url(f"http://127.0.0.1:{closed_port()}/x", max_attempts="1")
    rejecting_url = d1_url(proxy.base_url, max_attempts="1")
    failures = []
    for arguments in cli_runs(good, prefix, tmp_path):
        result = invoke(arguments, good, prefix, debug)
        check_result(result, f"`d1store {' '.join(arguments)}`")
        if result.exit_code != 0:
            failures.append((arguments[0], result.stderr[-300:]))
        for label, url, bad_prefix in (
            ("unreachable", unreachable, prefix),
            ("missing schema", good, prefix + "none_"),
            ("401", rejecting_url, prefix),
        ):
            proxy.enqueue(*[status(401)] * 20)
            bad = [url if item == good else item for item in arguments]
            result = invoke(bad, url, bad_prefix, debug)
            check_result(result, f"`d1store {' '.join(arguments)}` ({label})")
            proxy.clear()
    assert failures == [], "a command failed on the working database"
    assert_no_token(texts_of_logs(debug_logs), "the log")


def test_db_commands_use_global_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by the run above: `db` ignored the global --url and --table-prefix
    # and migrated ./d1store.db instead.
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "target.db"
    runner = CliRunner()
    arguments = ["--url", f"sqlite:///{target}", "--table-prefix", "gp_", "db", "upgrade"]
    result = runner.invoke(main, arguments, env=CLEAN_ENV)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "d1store.db").exists()
    with D1Store(f"sqlite:///{target}", table_prefix="gp_") as store:
        assert store.threads.list().total == 0  # raises if the tables are missing
    current = runner.invoke(main, ["--url", f"sqlite:///{target}", "--table-prefix", "gp_", "db", "current"])
    assert current.exit_code == 0
    assert current.stdout.strip() != "base (no revision)"
