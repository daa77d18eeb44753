"""Alembic migrations for roomkey (run them with ``roomkey.service.db.migrate``)."""
