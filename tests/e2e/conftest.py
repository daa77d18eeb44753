"""End-to-end fixtures: the service tests' database fixtures, reused as they are.

``db_url`` (SQLite and PostgreSQL), ``engine``, ``db_backend`` and ``secret_box`` come from
``tests/service/conftest.py``, loaded by path (conftest modules are not importable by name).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parents[1] / "service" / "conftest.py"
_spec = importlib.util.spec_from_file_location("roomkey_tests_service_conftest", _path)
assert _spec is not None
assert _spec.loader is not None
_service_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_service_conftest)

db_url = _service_conftest.db_url
db_backend = _service_conftest.db_backend
engine = _service_conftest.engine
secret_box = _service_conftest.secret_box
clear_tables = _service_conftest.clear_tables
