"""The image benchmarks run end to end in their quick modes and write their sections where they are told
(slow: about three minutes together; ``make test-slow``)."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("name, section, row", [("image_training", "image-training", "| cpu | fp32 | default |"),
                                                ("image_sampling", "image-sampling", "| digits 8x8 | heun |"),
                                                ("image_quality", "image_quality", "| polydiff | 2 (default) |")])
def test_image_benchmark_quick_mode_writes_its_section(name, section, row, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    assert importlib.import_module(f"polydiff.benchmarks.{name}").main(["--quick", "--out", str(out)]) == 0
    text = out.read_text()
    assert f"<!-- section: {section} -->" in text and row in text
