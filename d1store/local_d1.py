"""Run a local Cloudflare D1 server for tests and development.

The server is ``_local_d1/server.mjs``: a Node.js program that starts workerd
(Cloudflare's Workers runtime) through Miniflare with a D1 binding, and serves
D1's REST API (``/query`` and ``/raw``) on loopback. Its npm dependencies are
installed once per lock file into a per-user cache directory.

Foreground use: ``python -m d1store.local_d1 [--port N] [--persist DIR]``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self
from urllib.parse import quote

from d1store.errors import D1StoreError

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent / "_local_d1"
LOCAL_API_TOKEN = "local-d1-token"
DEFAULT_ACCOUNT_ID = "local-account"
DEFAULT_DATABASE_ID = "local-database"
ALLOWED_HOSTS = ("127.0.0.1", "::1")
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
NPM_CI_TIMEOUT_SECONDS = 900.0
MIN_NODE_MAJOR = 20

_INSTALLED_MARKER = ".d1store-installed"
_STDERR_TAIL_LINES = 40
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class LocalD1Error(D1StoreError, RuntimeError):
    """Raised when the local D1 server cannot be installed, started or stopped."""


def cache_dir() -> Path:
    """Return the per-user cache directory of d1store.

    ``$D1STORE_CACHE_DIR`` wins, then ``$XDG_CACHE_HOME/d1store``, then
    ``~/.cache/d1store``.
    """
    explicit = os.environ.get("D1STORE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "d1store"
    return Path.home() / ".cache" / "d1store"


def _find_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LocalD1Error(
            f"{name!r} was not found on PATH; the local D1 server needs Node.js "
            f"{MIN_NODE_MAJOR} or newer with npm. Install Node.js (for example "
            "'apt-get install nodejs npm') and try again."
        )
    return path


def _check_node_version(node: str) -> None:
    try:
        output = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        raise LocalD1Error(f"'{node} --version' failed: {error}") from error
    match = re.match(r"^v(\d+)\.", output)
    if match is None or int(match.group(1)) < MIN_NODE_MAJOR:
        raise LocalD1Error(
            f"the local D1 server needs Node.js {MIN_NODE_MAJOR} or newer, "
            f"but '{node} --version' printed {output!r}. Install a newer Node.js."
        )


def ensure_installed() -> Path:
    """Install the server's npm dependencies into the cache and return that directory.

    The directory name contains a hash of ``package.json`` and
    ``package-lock.json``, so a changed lock file gets a fresh install. The
    install runs ``npm ci`` in a temporary directory that is renamed into place
    under an exclusive ``flock``, so concurrent processes neither race nor see
    a partial install.
    """
    package_json = (PACKAGE_DIR / "package.json").read_bytes()
    package_lock = (PACKAGE_DIR / "package-lock.json").read_bytes()
    digest = hashlib.sha256(package_json + b"\0" + package_lock).hexdigest()[:16]

    root = cache_dir() / "local-d1"
    target = root / f"node-{digest}"
    if (target / _INSTALLED_MARKER).is_file():
        return target

    node = _find_tool("node")
    npm = _find_tool("npm")
    _check_node_version(node)
    root.mkdir(parents=True, exist_ok=True)

    with open(root / f"node-{digest}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if (target / _INSTALLED_MARKER).is_file():
            return target

        staging = Path(tempfile.mkdtemp(prefix=f".node-{digest}-", dir=root))
        try:
            shutil.copyfile(PACKAGE_DIR / "package.json", staging / "package.json")
            shutil.copyfile(PACKAGE_DIR / "package-lock.json", staging / "package-lock.json")
            _run_npm_ci(npm, staging)
            (staging / _INSTALLED_MARKER).write_text(digest + "\n")
            # A directory without the marker is a leftover of a crashed install.
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    logger.info("installed the local D1 server's npm packages in %s", target)
    return target


def _run_npm_ci(npm: str, directory: Path) -> None:
    command = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    npm_args = " ".join(command[1:])
    logger.info("running 'npm %s' in %s", npm_args, directory)
    try:
        completed = subprocess.run(
            command,
            check=False,
            cwd=directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired as error:
        raise LocalD1Error(
            f"'npm {npm_args}' in {directory} timed out after "
            f"{NPM_CI_TIMEOUT_SECONDS:.0f} s; "
            "check that the npm registry is reachable and try again."
        ) from error
    except OSError as error:
        raise LocalD1Error(f"could not run 'npm {npm_args}' in {directory}: {error}") from error
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr).strip().splitlines()
        tail = "\n".join(output[-20:])
        raise LocalD1Error(
            f"'npm {npm_args}' failed with exit code {completed.returncode} "
            f"in {directory}. "
            "Check that the npm registry is reachable, or install into another "
            f"directory by setting D1STORE_CACHE_DIR. npm output:\n{tail}"
        )


def ensure_server_script() -> Path:
    """Install the server if needed and return server.mjs, copied next to node_modules.

    Node resolves ``import "miniflare"`` from the script's own directory, so the
    script must live there. The file name contains the script's hash, and the
    copy is written to a temporary name and renamed, so concurrent starts are safe.
    """
    directory = ensure_installed()
    source = (PACKAGE_DIR / "server.mjs").read_bytes()
    script = directory / f"server-{hashlib.sha256(source).hexdigest()[:16]}.mjs"
    if not script.is_file():
        temporary = script.with_name(f".{script.name}.{os.getpid()}.tmp")
        temporary.write_bytes(source)
        os.replace(temporary, script)
    return script


def _validate_id(name: str, value: str) -> None:
    if not _ID_PATTERN.match(value):
        raise ValueError(f"invalid {name} {value!r}: use 1-64 characters from A-Z a-z 0-9 _ -")


class LocalD1Server:
    """A local D1 REST API server, running in its own process group.

    ``start()`` spawns ``node server.mjs`` and waits for its ready line.
    ``stop()`` (or leaving the ``with`` block) stops Node and workerd. The
    server's stdin stays open while this object runs it: if this Python process
    dies, the pipe closes and the server exits on its own.
    """

    def __init__(
        self,
        *,
        account_id: str = DEFAULT_ACCOUNT_ID,
        database_id: str = DEFAULT_DATABASE_ID,
        host: str = "127.0.0.1",
        ready_timeout: float = READY_TIMEOUT_SECONDS,
    ) -> None:
        _validate_id("account_id", account_id)
        _validate_id("database_id", database_id)
        if host not in ALLOWED_HOSTS:
            raise ValueError(f"invalid host {host!r}: the local D1 server binds only 127.0.0.1 or ::1")
        self.account_id = account_id
        self.database_id = database_id
        self.host = host
        self.api_token = LOCAL_API_TOKEN
        self.ready_timeout = ready_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._base_url: str | None = None
        self._port: int | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._threads: list[threading.Thread] = []
        self._scratch_dir: Path | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self, port: int = 0, persist: str | os.PathLike[str] | None = None) -> LocalD1Server:
        """Start the server and wait until it accepts requests.

        ``port=0`` picks a free port. ``persist`` is a directory that keeps the
        database across restarts, and ``None`` keeps it in memory.
        """
        if self._process is not None:
            raise LocalD1Error(f"{self!r} is already started; call stop() first")
        if not 0 <= port <= 65535:
            raise ValueError(f"invalid port {port}: expected 0-65535")

        script = ensure_server_script()
        command = [
            _find_tool("node"),
            str(script),
            "--port",
            str(port),
            "--host",
            self.host,
            "--account-id",
            self.account_id,
            "--database-id",
            self.database_id,
        ]
        if persist is not None:
            persist_dir = Path(persist).resolve()
            persist_dir.mkdir(parents=True, exist_ok=True)
            command += ["--persist", str(persist_dir)]

        # Miniflare keeps in-memory databases under TMPDIR. A directory of our
        # own lets stop() delete it even when node was killed before cleanup.
        self._scratch_dir = Path(tempfile.mkdtemp(prefix="d1store-local-d1-"))
        env = dict(os.environ, TMPDIR=str(self._scratch_dir))

        self._stderr_tail.clear()
        started_at = time.monotonic()
        logger.debug("starting the local D1 server: %s", command)
        try:
            process = subprocess.Popen(
                command,
                cwd=script.parent,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as error:
            self._remove_scratch_dir()
            raise LocalD1Error(f"could not start {command[0]}: {error}") from error
        self._process = process
        try:
            ready = self._wait_ready(process)
        except BaseException:
            self.stop()
            raise
        self._base_url = ready["base_url"]
        self._port = ready["port"]
        logger.info(
            "local D1 server started at %s (pid %s) in %.2f s",
            self._base_url,
            process.pid,
            time.monotonic() - started_at,
        )
        return self

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        assert process.stdout is not None and process.stderr is not None
        lines: queue.Queue[str | None] = queue.Queue()
        self._threads = [
            threading.Thread(
                target=_read_stdout,
                args=(process.stdout, lines),
                name="local-d1-stdout",
                daemon=True,
            ),
            threading.Thread(
                target=_read_stderr,
                args=(process.stderr, self._stderr_tail),
                name="local-d1-stderr",
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()

        try:
            line = lines.get(timeout=self.ready_timeout)
        except queue.Empty:
            raise LocalD1Error(
                "the local D1 server did not become ready within "
                f"{self.ready_timeout:.0f} s; "
                f"its stderr ends with:\n{self._stderr_text()}"
            ) from None
        if line is None:
            code = process.wait(timeout=STOP_TIMEOUT_SECONDS)
            # Give the stderr reader a moment to collect the last lines.
            self._threads[1].join(timeout=2)
            raise LocalD1Error(
                f"the local D1 server exited with code {code} before it was ready; "
                f"its stderr ends with:\n{self._stderr_text()}"
            )
        try:
            ready = json.loads(line)
        except json.JSONDecodeError as error:
            raise LocalD1Error(f"the local D1 server printed an invalid ready line: {line!r}") from error
        if (
            not isinstance(ready, dict)
            or not isinstance(ready.get("base_url"), str)
            or not isinstance(ready.get("port"), int)
        ):
            raise LocalD1Error(f"the local D1 server printed an invalid ready line: {line!r}")
        return ready

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop the server: SIGTERM its process group, then SIGKILL after ``timeout``."""
        process = self._process
        if process is None:
            return
        group = process.pid  # start_new_session=True makes node the group leader.
        try:
            _signal_group(group, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "local D1 server (pid %s) did not stop within %.0f s; killing its process group",
                    group,
                    timeout,
                )
                _signal_group(group, signal.SIGKILL)
                process.wait(timeout=timeout)
            # Node disposes workerd before it exits, so this only kills leftovers.
            if not _wait_group_gone(group, timeout=2.0):
                logger.warning("local D1 server group %s outlived node; killing it", group)
                _signal_group(group, signal.SIGKILL)
                _wait_group_gone(group, timeout=timeout)
        finally:
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            for thread in self._threads:
                thread.join(timeout=2)
            self._threads = []
            self._remove_scratch_dir()
            self._process = None
            self._base_url = None
            self._port = None
        logger.info(
            "local D1 server (pid %s) stopped with exit code %s",
            group,
            process.returncode,
        )

    def poll(self) -> int | None:
        """Return the server's exit code, or ``None`` while it runs or before start."""
        return None if self._process is None else self._process.poll()

    def __enter__(self) -> Self:
        if self._process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- connection details ------------------------------------------------

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The ``node`` process, or ``None`` when the server is not running."""
        return self._process

    @property
    def pid(self) -> int:
        """Process id of ``node``, which is also the server's process group id."""
        return self._require_started()[0].pid

    @property
    def port(self) -> int:
        """TCP port the server listens on."""
        self._require_started()
        assert self._port is not None
        return self._port

    @property
    def base_url(self) -> str:
        """URL of the database, ending in ``/d1/database/{database_id}``.

        Append ``/query`` or ``/raw`` to it for requests.
        """
        return self._require_started()[1]

    @property
    def url(self) -> str:
        """d1store connection URL for this server, with the fake API token."""
        return (
            f"cloudflare_d1://{self.account_id}:{self.api_token}@{self.database_id}"
            f"?base_url={quote(self.base_url, safe='')}"
        )

    def ready_info(self) -> dict[str, object]:
        """Return the connection details as a JSON-ready dict."""
        return {
            "base_url": self.base_url,
            "port": self.port,
            "pid": self.pid,
            "account_id": self.account_id,
            "database_id": self.database_id,
            "api_token": self.api_token,
            "url": self.url,
        }

    def _require_started(self) -> tuple[subprocess.Popen[bytes], str]:
        if self._process is None or self._base_url is None:
            raise LocalD1Error("the local D1 server is not running; call start() first")
        return self._process, self._base_url

    def _remove_scratch_dir(self) -> None:
        if self._scratch_dir is not None:
            shutil.rmtree(self._scratch_dir, ignore_errors=True)
            self._scratch_dir = None

    def _stderr_text(self) -> str:
        return "\n".join(self._stderr_tail) or "(no output)"

    def __repr__(self) -> str:
        # The token is fake, but callers may log this object next to real ones.
        state = f"base_url={self._base_url!r}" if self._base_url else "stopped"
        return f"LocalD1Server(account_id={self.account_id!r}, database_id={self.database_id!r}, {state})"


def _read_stdout(stream: IO[bytes], lines: queue.Queue[str | None]) -> None:
    for raw in stream:
        line = raw.decode("utf-8", "replace").strip()
        if line:
            lines.put(line)
    lines.put(None)


def _read_stderr(stream: IO[bytes], tail: collections.deque[str]) -> None:
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip()
        tail.append(line)
        logger.debug("local D1 server: %s", line)


def _signal_group(group: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


def _group_alive(group: int) -> bool:
    """Return whether any process of ``group`` still runs.

    Zombies do not count: an orphaned workerd is reaped by PID 1, which in some
    containers happens a second or more after it exited.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 3 and int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def _wait_group_gone(group: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _group_alive(group):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def serve(port: int = 0, persist: str | None = None) -> int:
    """Run the local D1 server in the foreground until SIGINT or SIGTERM.

    Prints one JSON line with the connection details to stdout once the server
    is ready. Returns the process exit code: 0 after a signal, 1 on failure.
    """
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    server = LocalD1Server()
    try:
        try:
            server.start(port=port, persist=persist)
        except LocalD1Error as error:
            if "ERR_ADDRESS_IN_USE" in str(error):
                print(
                    f"d1store local-d1: port {port} on 127.0.0.1 is already in use; "
                    "choose another --port (0 picks a free one)",
                    file=sys.stderr,
                )
            else:
                print(f"d1store local-d1: {error}", file=sys.stderr)
            return 1
        print(json.dumps(server.ready_info()), flush=True)
        while not stop_requested.wait(0.5):
            code = server.poll()
            if code is not None:
                print(
                    f"d1store local-d1: the server exited unexpectedly with code {code}",
                    file=sys.stderr,
                )
                return 1
        return 0
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m d1store.local_d1",
        description=("Run a local Cloudflare D1 REST API server on 127.0.0.1 until interrupted."),
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="TCP port to listen on (default: 0, a free port)",
    )
    parser.add_argument(
        "--persist",
        metavar="DIR",
        default=None,
        help="directory that keeps the database across restarts (default: in memory)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return serve(port=args.port, persist=args.persist)


if __name__ == "__main__":
    sys.exit(_main())
