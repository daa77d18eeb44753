"""Short (CI) versus long (by hand) mode, sabotage switches and the figures file.

* ``ROOMKEY_LONG=1`` (or ``scripts/reliability.sh --long``) selects the long mode: more
  bookings, more kills, more generated inputs. The default is the short mode CI runs.
* ``ROOMKEY_SABOTAGE=name`` switches on one deliberate break of a guarantee, applied by the
  harness only (monkeypatching, or a wrapper around ``roomkey serve``); the suite checking
  that guarantee must then fail. Product code has no such switch.
* Every suite records its figures (cases tried, crashes survived, ...) in
  ``$ROOMKEY_FIGURES_DIR/<suite>.json`` (default ``<tmp>/roomkey-reliability``;
  ``scripts/reliability.sh`` prints where).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

LONG = os.environ.get("ROOMKEY_LONG", "") not in ("", "0", "false", "no")
SABOTAGE = os.environ.get("ROOMKEY_SABOTAGE", "").strip()
FIGURES_DIR = Path(
    os.environ.get("ROOMKEY_FIGURES_DIR", str(Path(tempfile.gettempdir()) / "roomkey-reliability"))
)


def pick(short: Any, long: Any) -> Any:
    """The value for the current mode."""
    return long if LONG else short


def sabotaged(name: str) -> bool:
    """True when the run deliberately breaks guarantee ``name``."""
    return name in {s.strip() for s in SABOTAGE.split(",") if s.strip()}


def record_figures(suite: str, case: str, figures: dict[str, Any]) -> None:
    """Merge ``figures`` for ``case`` into the suite's figures file (never fails a test)."""
    try:
        FIGURES_DIR.mkdir(parents=True, exist_ok=True)
        path = FIGURES_DIR / f"{suite}.json"
        data: dict[str, Any] = {}
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8") or "{}")
        data[case] = {
            **figures,
            "mode": "long" if LONG else "short",
            "sabotage": SABOTAGE or None,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError:
        pass
