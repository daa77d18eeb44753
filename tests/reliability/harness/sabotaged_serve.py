"""``python -m harness.sabotaged_serve ARGS``: the roomkey CLI with the sabotage switches of
``ROOMKEY_SABOTAGE`` applied first (test harness only; see :mod:`harness.sabotage`)."""

from __future__ import annotations

import sys

from harness.sabotage import apply_all


def main() -> None:
    applied = apply_all()
    sys.stderr.write(f'{{"harness": "sabotage applied: {",".join(applied)}"}}\n')
    from roomkey.cli.app import main as roomkey_main

    sys.argv = ["roomkey", *sys.argv[1:]]
    roomkey_main()


if __name__ == "__main__":
    main()
