"""Tests of the Alembic migrations."""
