"""Running a benchmark's quick mode into a temporary BENCHMARKS.md."""

from __future__ import annotations

import importlib

import pytest


@pytest.fixture
def quick_section(tmp_path):
    """``run(module, section)``: ``polydiff.benchmarks.<module>`` in its quick mode, writing into a temporary
    BENCHMARKS.md; returns the file's text after checking that section ``section`` is in it."""

    def run(module: str, section: str, *extra: str) -> str:
        out = tmp_path / "BENCHMARKS.md"
        assert importlib.import_module(f"polydiff.benchmarks.{module}").main(["--quick", "--out", str(out),
                                                                               *extra]) == 0
        text = out.read_text()
        assert f"<!-- section: {section} -->" in text
        return text

    return run
