"""The runnable examples in docs/loqed.md's SDK section actually run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "loqed.md"


def _sdk_examples() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    sdk = text.split("\n## SDK", 1)[1].split("\n## Simulator", 1)[0]
    # ```python blocks are runnable; ```py blocks show real-hardware calls and are skipped.
    return re.findall(r"```python\n(.*?)```", sdk, flags=re.DOTALL)


EXAMPLES = _sdk_examples()


def test_the_sdk_section_has_runnable_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_sdk_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    code = compile(EXAMPLES[index], f"docs/loqed.md:example{index}", "exec")
    exec(code, {"__name__": f"doc_example_{index}"})  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    # printed clients, models and errors never reveal a key or token (long base64 runs)
    assert not re.search(r"[A-Za-z0-9+/_.-]{40,}", out), out
