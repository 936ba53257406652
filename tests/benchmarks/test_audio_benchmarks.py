"""The audio vocoder speed benchmark runs end to end in its quick mode against lmnt-com/wavegrad (the `bench` extra)
and writes its section where it is told (slow: about a minute on 2 cores; ``make test-slow``)."""

from __future__ import annotations

import pytest

from polydiff.modalities.audio.wavegrad_fast import has_avx512


@pytest.mark.slow
def test_audio_vocoder_speed_quick_mode_writes_its_section(tmp_path):
    pytest.importorskip("wavegrad.model", reason="the reference implementation: pip install wavegrad (bench extra)")
    from polydiff.benchmarks import audio_vocoder_speed

    out = tmp_path / "BENCHMARKS.md"
    assert audio_vocoder_speed.main(["--quick", "--out", str(out)]) == 0
    text = out.read_text()
    assert "<!-- section: audio-vocoder-speed -->" in text and "| 6 | fp32 | polydiff |" in text
    assert "15,920,993" in text and "| polydiff | fp32 |" in text
    assert ("| 6 | bf16 | polydiff |" in text) == has_avx512()
    assert ("skipped: no AVX-512" in text) != has_avx512()
