"""Alembic environment of this repository: logging from alembic.ini, then d1store's environment.

The revision files live in ``d1store/migrations/versions`` (see
``version_locations`` in alembic.ini), so installed copies of d1store and
this repository migrate with the same files.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from d1store.migrations.environment import run_environment

if context.config.config_file_name is not None:
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)

run_environment()
