"""The video benchmarks run end to end in their quick modes (training against diffusers' ``UNet3DConditionModel``,
memory and time against length, extension quality) and write their sections where they are told (slow: up to a
minute each on 2 cores; ``make test-slow``)."""

from __future__ import annotations

import re

import pytest
import torch

NUMBER = r"[\d.]+"


@pytest.mark.slow
def test_video_training_quick_mode_writes_its_section(quick_section):
    pytest.importorskip("diffusers", reason="the reference implementation: pip install diffusers (bench extra)")
    text = quick_section("video_training", "video-training")
    params = re.search(r"Parameters: polydiff\s+([\d,]+), diffusers ([\d,]+)", text)
    assert params and all(int(n.replace(",", "")) > 0 for n in params.groups())
    side_by_side = rf"\| {{}} \| default \| {NUMBER} \| {NUMBER} \| \*\*{NUMBER}\*\* \| {NUMBER} \| \d+ \| \d+ \|"
    assert re.search(side_by_side.format("fp32"), text)
    avx512 = "AVX512" in torch.backends.cpu.get_cpu_capability()
    assert bool(re.search(side_by_side.format("bf16"), text)) == avx512
    assert ("| bf16 | default | skipped: no AVX-512 |" in text) != avx512
    assert re.search(rf"\| fp32 \| checkpointing \| {NUMBER} \| ({NUMBER}|not supported) \|", text)
    for frames in (4, 8, 16):  # the quick clips' 4 frames, then 2x and 4x
        assert re.search(rf"\| {frames} \| {NUMBER} \| {NUMBER} \| \*\*{NUMBER}\*\* \| {NUMBER} \| {NUMBER} \({NUMBER}\) "
                         rf"\| \d+ \|", text), frames


@pytest.mark.slow
def test_video_length_quick_mode_writes_a_row_per_length(quick_section):
    text = quick_section("video_length", "video-length")
    for frames in (8, 16):
        assert re.search(rf"\| {frames} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| \d+ \| -?{NUMBER} \| [+-]{NUMBER}% \|",
                         text), frames


@pytest.mark.slow
def test_video_extension_quick_mode_scores_every_method(quick_section):
    text = quick_section("video_extension", "video-extension")
    for method in ("real clips of 32 frames", "explicit frame conditioning", "replacement (w_r = 0)",
                   "reconstruction guidance, w_r = 2"):
        row = next((line for line in text.splitlines() if line.startswith(f"| {method}")), None)
        assert row is not None, method
        consistency = float(row.split("|")[3])
        assert 0 <= consistency <= 1
