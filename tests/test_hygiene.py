"""Resource hygiene: a closed store leaves no file descriptors or threads behind,
and an interrupted test run leaves no local D1 server processes behind."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from d1store import D1Store, Message, Thread

LIFECYCLES = 3


def open_fds() -> list[str]:
    """Return what each open file descriptor of this process points at."""
    targets = []
    for name in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            continue  # the descriptor listdir itself used, closed since
    return sorted(targets)


def live_threads() -> list[str]:
    return sorted(thread.name for thread in threading.enumerate())


def use_store(store: D1Store) -> None:
    """Run one of each kind of call, so every connection and client gets used."""
    store.init()
    store.threads.save(Thread(id="t", resource_id="r"))
    with store.session() as session:
        session.messages.save([Message(id="m", thread_id="t", role="user", content="x")])
        session.metadata.set("thread", "t", "k", 1)
    assert store.messages.last("t", 5)
    store.resources.update("r", working_memory="w")
    store.threads.delete("t")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_store_lifecycle_leaks_nothing(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if backend == "live":
        pytest.skip("counts only local resources")
    url = f"sqlite:///{tmp_path / 'hygiene.db'}"
    if backend == "d1":
        # Started before counting: the shared server's pipes and reader threads stay open.
        url = request.getfixturevalue("d1store_local_d1").url
    gc.collect()
    fds_before, threads_before = open_fds(), live_threads()

    for round_number in range(LIFECYCLES):
        store = D1Store(url, table_prefix=f"hygiene{os.getpid()}_{round_number}_")
        use_store(store)
        store.close()
        gc.collect()
        assert open_fds() == fds_before, f"file descriptors left open after round {round_number}"
        assert live_threads() == threads_before, f"threads left running after round {round_number}"


CHILD = textwrap.dedent(
    """
    import json, time
    from d1store.testing import local_d1

    with local_d1() as server:
        print(json.dumps({"group": server.pid}), flush=True)
        time.sleep(120)
    """
)


def group_members(group: int) -> list[int]:
    """Return the ids of the live (not zombie) processes of process group ``group``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[-1].split()
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def command_names(pids: list[int]) -> list[str]:
    names = []
    for pid in pids:
        try:
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue
    return sorted(names)


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    """A Python process running a local D1 server until it is signalled."""
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            assert stream is not None
            stream.close()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupted_run_leaves_no_server(child: subprocess.Popen[str], signum: signal.Signals) -> None:
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, "the child exited before its server was ready"
    group = json.loads(line)["group"]
    members = group_members(group)
    assert "node" in command_names(members)
    assert any(name.startswith("workerd") for name in command_names(members)), command_names(members)

    child.send_signal(signum)
    child.wait(timeout=20)
    deadline = time.monotonic() + 10
    while group_members(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = group_members(group)
    if survivors:
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)  # the server's own processes, started by this test
    assert command_names(survivors) == [], f"server processes outlived the {signum.name} of their parent"
