"""The runnable example in docs/loqed.md's Simulator section actually runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "loqed.md"


def _examples() -> list[str]:
    section = DOC.read_text(encoding="utf-8").split("\n## Simulator", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


async def test_simulator_section_example_runs() -> None:
    examples = _examples()
    assert examples
    for index, source in enumerate(examples):
        namespace: dict[str, Any] = {"__name__": f"sim_doc_example_{index}"}
        exec(compile(source, f"docs/loqed.md:sim{index}", "exec"), namespace)  # noqa: S102
        tests = [v for k, v in namespace.items() if k.startswith("test_") and callable(v)]
        assert tests
        for test in tests:
            await test()
