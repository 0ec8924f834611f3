"""Alembic migrations: schema consistency, atomic revisions, the ``db`` commands.

Runs on SQLite and on the local D1 server. Each test gets its own table
prefix, and on SQLite its own database file.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from click.testing import CliRunner
from sqlalchemy import exc as sa_exc

from d1store import D1Store, Message, Thread
from d1store.backends.base import Result, Statement
from d1store.errors import D1StoreError
from d1store.migrations import api
from d1store.migrations.cli import db
from d1store.migrations.connect import open_connection
from d1store.migrations.environment import resolve_settings
from d1store.migrations.version_table import HEAD_REVISION, REVISIONS
from d1store.schema import build_metadata

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ROOT / "d1store" / "migrations" / "versions"
_counter = itertools.count()


@dataclass
class Database:
    """A database URL on the current backend, and a fresh prefix for this test."""

    url: str
    prefix: str
    backend: str

    def store(self, prefix: str | None = None) -> D1Store:
        return D1Store(self.url, table_prefix=self.prefix if prefix is None else prefix)


def _fresh_prefix() -> str:
    return f"m{next(_counter)}_{uuid.uuid4().hex[:6]}_"


@pytest.fixture
def database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if backend == "sqlite":
        return Database(f"sqlite:///{tmp_path / 'migrations.db'}", _fresh_prefix(), backend)
    if backend == "d1":
        return Database(request.getfixturevalue("d1store_local_d1").url, _fresh_prefix(), backend)
    return Database(os.environ["D1STORE_URL"], _fresh_prefix(), backend)


@pytest.fixture
def stores() -> Iterator[list[D1Store]]:
    """Stores opened by a test, closed after it."""
    opened: list[D1Store] = []
    yield opened
    for store in opened:
        store.close()


def run(store: D1Store, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return store.backend.execute([Statement(sql, params)], write=False)[0].rows


def objects(store: D1Store, prefix: str) -> dict[str, str]:
    """Every table and index whose table name starts with ``prefix``, by name, with its type."""
    rows = run(store, "SELECT name, type, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')")
    return {name: kind for name, kind, table in rows if table.startswith(prefix)}


def schema_of(store: D1Store, prefix: str) -> dict[str, Any]:
    """Columns, indexes and index columns of every table of ``prefix``, with the prefix removed."""
    shape: dict[str, Any] = {}
    tables = sorted(name for name, kind in objects(store, prefix).items() if kind == "table")
    for table in tables:
        key = table.removeprefix(prefix)
        shape[f"{key} columns"] = run(store, f'PRAGMA table_xinfo("{table}")')
        for _, index, unique, origin, partial in run(store, f'PRAGMA index_list("{table}")'):
            index_key = index.replace(prefix, "", 1)
            shape[f"{key} index {index_key}"] = (unique, origin, partial)
            shape[f"{index_key} columns"] = run(store, f'PRAGMA index_xinfo("{index}")')
    return shape


def dump(store: D1Store, prefix: str, *, skip: tuple[str, ...] = ()) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every data table, each value as (SQLite type, hex of its bytes), in key order."""
    contents = {}
    for name in ("threads", "messages", "metadata", "resources"):
        table = f"{prefix}{name}"
        columns = [row[1] for row in run(store, f'PRAGMA table_info("{table}")') if row[1] not in skip]
        values = ", ".join(f'typeof("{column}"), hex("{column}")' for column in columns)
        keys = ", ".join(row[1] for row in run(store, f'PRAGMA table_info("{table}")') if row[5])
        contents[name] = run(store, f'SELECT {values} FROM "{table}" ORDER BY {keys}')
    return contents


def populate(store: D1Store) -> None:
    """Write threads, messages, metadata and resources with awkward values through the API."""
    texts = ["plain", "naïve café ✓ 😀", "e\u0301 combining", 'quote " and \\ backslash', "nul \x00 inside"]
    for index, text in enumerate(texts):
        store.threads.save(
            Thread(id=f"t{index}", resource_id=f"r{index % 2}", title=text, metadata={"n": index, "s": text})
        )
        store.messages.save(
            [
                Message(
                    id=f"m{index}-{n}", thread_id=f"t{index}", role="user", content={"text": text, "n": n}
                )
                for n in range(3)
            ]
        )
        store.resources.update(f"r{index}", working_memory=text, metadata={"big": 2**60 + index})
    store.threads.update("t1", archived=True)


def failing_versions(tmp_path: Path, body: str) -> Path:
    """Copy the packaged revisions into a folder and add revision 0003 with ``body`` as its upgrade."""
    folder = tmp_path / "versions"
    folder.mkdir()
    for source in VERSIONS.glob("r*.py"):
        shutil.copy(source, folder / source.name)
    (folder / "r0003_failing.py").write_text(
        '"""A revision that fails."""\n'
        "from alembic import op\n"
        "from d1store.migrations.environment import table_prefix\n"
        'revision = "0003"\n'
        'down_revision = "0002"\n'
        "branch_labels = None\n"
        "depends_on = None\n"
        "def upgrade():\n"
        "    p = table_prefix()\n"
        + "".join(f"    {line}\n" for line in textwrap.dedent(body).strip().splitlines())
        + "def downgrade():\n"
        "    pass\n",
        encoding="utf-8",
    )
    return folder


# -- revisions and drift ------------------------------------------------


def test_revisions_match_constant() -> None:
    script = ScriptDirectory.from_config(api.make_config())
    walked = [revision.revision for revision in script.walk_revisions("base", "heads")]
    assert tuple(reversed(walked)) == REVISIONS
    assert script.get_current_head() == HEAD_REVISION


def test_history_lists_revisions() -> None:
    assert [(item.revision, item.down_revision) for item in api.history()] == [
        ("0002", "0001"),
        ("0001", None),
    ]


def test_autogenerate_finds_no_drift(tmp_path: Path) -> None:
    # Against SQLite only: D1 reflection returns every type as TEXT, so
    # autogenerate would report type changes that are not there.
    url, prefix = f"sqlite:///{tmp_path / 'drift.db'}", "drift_"
    options = {"compare_type": True, "version_table": f"{prefix}alembic_version"}
    api.upgrade(url, table_prefix=prefix)
    with open_connection(url) as connection:
        context = MigrationContext.configure(connection, opts=options)
        assert compare_metadata(context, build_metadata(prefix)) == []

    api.downgrade(url, "0001", table_prefix=prefix)
    with open_connection(url) as connection:
        context = MigrationContext.configure(connection, opts=options)
        changes = compare_metadata(context, build_metadata(prefix))
    kinds = sorted(str(change[0][0] if isinstance(change, list) else change[0]) for change in changes)
    assert kinds == ["add_column", "add_index"]


def test_alembic_check_from_repository(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'check.db'}"
    environment = {**os.environ, "D1STORE_URL": url, "D1STORE_TABLE_PREFIX": "chk_"}

    def alembic(*arguments: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *arguments],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result

    alembic("upgrade", "head")
    assert "No new upgrade operations detected" in alembic("check").stdout
    assert alembic("current").stdout == "0002 (head)\n"
    with D1Store(url, table_prefix="chk_") as store:
        assert "chk_alembic_version" in objects(store, "chk_")


# -- settings -----------------------------------------------------------


def test_settings_order() -> None:
    environ = {"D1STORE_URL": "sqlite:///env.db", "D1STORE_TABLE_PREFIX": "env_"}
    assert resolve_settings({}, {}, environ) == resolve_settings({}, {}, environ)
    from_env = resolve_settings({}, {}, environ)
    assert (from_env.target, from_env.prefix) == ("sqlite:///env.db", "env_")
    from_x = resolve_settings({}, {"url": "sqlite:///x.db", "table_prefix": "x_"}, environ)
    assert (from_x.target, from_x.prefix) == ("sqlite:///x.db", "x_")
    from_api = resolve_settings(
        {"d1store.target": "sqlite:///api.db", "d1store.table_prefix": "api_"},
        {"url": "sqlite:///x.db"},
        environ,
    )
    assert (from_api.target, from_api.prefix) == ("sqlite:///api.db", "api_")
    default = resolve_settings({}, {}, {})
    assert (default.target, default.prefix) == ("sqlite:///d1store.db", "")
    cloudflare = resolve_settings(
        {},
        {},
        {"CLOUDFLARE_ACCOUNT_ID": "acc", "CLOUDFLARE_D1_DATABASE_ID": "db", "CLOUDFLARE_API_TOKEN": "secret"},
    )
    assert str(cloudflare.target).startswith("cloudflare_d1://acc:")
    with pytest.raises(ValueError, match="invalid table_prefix 'bad-prefix'"):
        resolve_settings({}, {"table_prefix": "bad-prefix"}, {})


# -- schema of init() and of upgrade head ------------------------------


def test_upgrade_equals_init(database: Database, stores: list[D1Store]) -> None:
    initialised = database.store(_fresh_prefix())
    stores.append(initialised)
    initialised.init()
    assert api.upgrade(database.url, table_prefix=database.prefix) == list(REVISIONS)

    expected = schema_of(initialised, initialised.table_prefix)
    assert expected == schema_of(initialised, database.prefix)
    assert "threads columns" in expected
    assert "ix_threads_resource_archived columns" in expected
    assert "alembic_version columns" in expected


def test_init_stamps_head(database: Database, stores: list[D1Store]) -> None:
    store = database.store()
    stores.append(store)
    store.init()
    store.init()
    assert run(store, f'SELECT version_num FROM "{database.prefix}alembic_version"') == [(HEAD_REVISION,)]
    assert api.current(store) == (HEAD_REVISION,)
    assert api.upgrade(store) == []


def test_init_rejects_outdated_schema(database: Database, stores: list[D1Store]) -> None:
    api.upgrade(database.url, "0001", table_prefix=database.prefix)
    store = database.store()
    stores.append(store)
    before = objects(store, database.prefix)
    with pytest.raises(D1StoreError, match=r"revision 0001, older than 0002; run `d1store db upgrade`"):
        store.init()
    assert objects(store, database.prefix) == before
    assert api.current(store) == ("0001",)


def test_downgrade_base_removes_prefix(database: Database, stores: list[D1Store]) -> None:
    other = database.store(_fresh_prefix())
    stores.append(other)
    other.init()
    other.threads.save(Thread(id="kept", resource_id="r"))
    other_schema = schema_of(other, other.table_prefix)

    api.upgrade(database.url, table_prefix=database.prefix)
    assert objects(other, database.prefix)
    assert api.downgrade(database.url, "base", table_prefix=database.prefix) == ["0002", "0001"]

    assert objects(other, database.prefix) == {}
    assert api.current(database.url, table_prefix=database.prefix) == ()
    assert schema_of(other, other.table_prefix) == other_schema
    assert other.threads.get("kept") is not None


# -- atomic revisions ----------------------------------------------------


def test_failing_revision_changes_nothing(database: Database, stores: list[D1Store], tmp_path: Path) -> None:
    api.upgrade(database.url, table_prefix=database.prefix)
    store = database.store()
    stores.append(store)
    populate(store)
    before_objects = objects(store, database.prefix)
    before_rows = dump(store, database.prefix)

    folder = failing_versions(
        tmp_path,
        """
        op.create_table(f"{p}scratch", __import__("sqlalchemy").Column("x", __import__("sqlalchemy").Text()))
        op.execute(f"UPDATE {p}threads SET title = 'changed'")
        op.drop_index(f"{p}ix_threads_created", table_name=f"{p}threads")
        op.execute(f"INSERT INTO {p}no_such_table VALUES (1)")
        """,
    )
    config = api.make_config(database.url, table_prefix=database.prefix)
    config.set_main_option("version_locations", str(folder))
    with pytest.raises(sa_exc.OperationalError, match="no such table"):
        command.upgrade(config, "head")

    assert api.current(store) == (HEAD_REVISION,)
    assert objects(store, database.prefix) == before_objects
    assert dump(store, database.prefix) == before_rows


def test_version_row_check_rejects_lost_row(
    database: Database, stores: list[D1Store], tmp_path: Path
) -> None:
    api.upgrade(database.url, table_prefix=database.prefix)
    store = database.store()
    stores.append(store)
    # Deleting the version row inside the revision is what a concurrent
    # migration that committed first looks like: the UPDATE of the version
    # then matches no row.
    folder = failing_versions(
        tmp_path,
        """
        op.execute(f"UPDATE {p}threads SET title = 'changed'")
        op.execute(f"DELETE FROM {p}alembic_version")
        """,
    )
    store.threads.save(Thread(id="t1", resource_id="r", title="original"))
    config = api.make_config(database.url, table_prefix=database.prefix)
    config.set_main_option("version_locations", str(folder))
    expected = "another process migrated" if database.backend != "sqlite" else "expected to match one row"
    with pytest.raises((CommandError, sa_exc.OperationalError), match=expected):
        command.upgrade(config, "head")

    assert api.current(store) == (HEAD_REVISION,)
    thread = store.threads.get("t1")
    assert thread is not None
    assert thread.title == "original"


def test_each_revision_is_one_batch(database: Database, stores: list[D1Store]) -> None:
    if database.backend == "sqlite":
        pytest.skip("D1 only: SQLite runs each revision as one transaction")
    store = database.store()
    stores.append(store)
    batches: list[list[str]] = []
    original = store.backend.execute

    def recording(statements: Sequence[Statement], *, write: bool) -> list[Result]:
        if write:
            batches.append([statement.sql for statement in statements])
        return original(statements, write=write)

    store.backend.execute = recording  # type: ignore[method-assign]
    api.upgrade(store)

    version = f"{database.prefix}alembic_version"
    assert len(batches) == 2
    assert batches[0][0].lstrip().startswith(f"CREATE TABLE {version}")
    assert batches[0][-1].startswith(f"INSERT INTO {version}")
    assert batches[1][-2].startswith(f"UPDATE {version}")
    assert "changes() <> 1" in batches[1][-1]


def test_d1_base_url_from_environment(
    database: Database, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if database.backend != "d1":
        pytest.skip("local D1 server only")
    server = request.getfixturevalue("d1store_local_d1")
    monkeypatch.setenv("CF_D1_BASE_URL", server.base_url)
    url = f"cloudflare_d1://{server.account_id}:{server.api_token}@{server.database_id}"
    assert api.upgrade(url, table_prefix=database.prefix) == list(REVISIONS)
    assert api.current(url, table_prefix=database.prefix) == (HEAD_REVISION,)


# -- the archiving revision on a populated database ---------------------


def test_archiving_keeps_rows(database: Database, stores: list[D1Store]) -> None:
    api.upgrade(database.url, table_prefix=database.prefix)
    store = database.store()
    stores.append(store)
    populate(store)
    before = dump(store, database.prefix, skip=("archived_at",))
    assert len(before["messages"]) == 15

    # The downgrade rebuilds the threads table; the upgrade adds the column.
    assert api.downgrade(store, "0001") == ["0002"]
    assert dump(store, database.prefix) == before
    assert api.upgrade(store) == ["0002"]
    assert dump(store, database.prefix, skip=("archived_at",)) == before
    assert run(store, f'SELECT count(*) FROM "{database.prefix}threads" WHERE archived_at IS NOT NULL') == [
        (0,)
    ]

    listed = store.threads.list(per_page=None)
    assert listed.total == 5
    assert store.threads.list(archived=False, per_page=None).total == 5
    thread = store.threads.get("t4")
    assert thread is not None
    assert thread.title == "nul \x00 inside"


# -- the db command group ----------------------------------------------


def test_cli_end_to_end(database: Database) -> None:
    runner = CliRunner()
    options = ["--url", database.url, "--table-prefix", database.prefix]

    def invoke(*arguments: str) -> str:
        result = runner.invoke(db, [*arguments, *options] if arguments[0] != "history" else list(arguments))
        assert result.exit_code == 0, result.output
        return result.output

    assert invoke("current") == "base (no revision)\n"
    assert invoke("upgrade", "0001") == "applied 0001; database at 0001\n"
    assert invoke("upgrade") == "applied 0002; database at 0002\n"
    assert invoke("upgrade") == "nothing to apply; database at 0002\n"
    assert invoke("current") == "0002\n"
    assert invoke("history").splitlines()[0].startswith("0001 -> 0002: Thread archiving")
    assert invoke("downgrade", "0001") == "undid 0002; database at 0001\n"
    assert invoke("upgrade", "head") == "applied 0002; database at 0002\n"
    assert invoke("downgrade", "base") == "undid 0002, 0001; database at base (no revision)\n"
    with D1Store(database.url, table_prefix=database.prefix) as store:
        assert objects(store, database.prefix) == {}
        assert invoke("stamp", "0001") == "database stamped at 0001\n"
        tables = [name for name, kind in objects(store, database.prefix).items() if kind == "table"]
        assert tables == [f"{database.prefix}alembic_version"]
        assert invoke("stamp", "base") == "database stamped at base (no revision)\n"
        assert objects(store, database.prefix) == {}


def test_cli_reports_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        db, ["upgrade", "--url", f"sqlite:///{tmp_path / 'x.db'}", "--table-prefix", "a-b"]
    )
    assert result.exit_code == 1
    assert "invalid table_prefix 'a-b'" in result.output
    result = CliRunner().invoke(db, ["upgrade", "0009", "--url", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code == 1
    assert "0009" in result.output


def test_cli_help_names_options() -> None:
    for name in ("upgrade", "downgrade", "current", "stamp"):
        output = CliRunner().invoke(db, [name, "--help"]).output
        assert "--url URL" in output
        assert "Database URL" in output
        assert "--table-prefix PREFIX" in output


def test_cli_module_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'module.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "d1store.migrations.cli", "upgrade", "--url", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "applied 0001, 0002; database at 0002\n"
