"""Alembic environment script of the migrations shipped in the d1store package."""

from __future__ import annotations

from d1store.migrations.environment import run_environment

run_environment()
