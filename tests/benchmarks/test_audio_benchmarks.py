"""The audio vocoder benchmarks (speed, quality) run end to end in their quick modes against lmnt-com/wavegrad (the
`bench` extra) and write their sections where they are told (slow: about a minute each on 2 cores;
``make test-slow``)."""

from __future__ import annotations

import math

import pytest

from polydiff.modalities.audio.wavegrad_fast import has_avx512


@pytest.mark.slow
def test_audio_vocoder_speed_quick_mode_writes_its_section(quick_section):
    pytest.importorskip("wavegrad.model", reason="the reference implementation: pip install wavegrad (bench extra)")
    text = quick_section("audio_vocoder_speed", "audio-vocoder-speed")
    assert "| 6 | fp32 | polydiff |" in text
    assert "15,920,993" in text and "| polydiff | fp32 |" in text
    assert ("| 6 | bf16 | polydiff |" in text) == has_avx512()
    assert ("skipped: no AVX-512" in text) != has_avx512()
    floor = next(line for line in text.splitlines() if line.startswith("| fp32 | ") and line.count("|") == 6)
    gemm, flop, rtf_floor, measured = (float(c) for c in floor.strip("|").split("|")[1:])
    assert gemm > 0 and 400 < flop < 430 and rtf_floor == pytest.approx(flop / gemm, rel=0.05) and measured > 0


@pytest.mark.slow
def test_audio_vocoder_quality_quick_mode_writes_its_section_and_files(quick_section, tmp_path):
    pytest.importorskip("wavegrad.learner", reason="the reference implementation: pip install wavegrad (bench extra)")
    text = quick_section("audio_vocoder_quality", "audio-vocoder-quality")
    assert "QUICK SMOKE RUN" in text
    rows = {tuple(cells[:2]): cells for line in text.splitlines() if line.startswith("| ")
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}
    names = [("polydiff tiny", "6: WG-6 betas"), ("polydiff tiny", "10: logSNR spacing"),
             ("polydiff tiny", "100: linspace (every 10th)"), ("Base", "6: WG-6 betas"), ("Base", "10: logSNR spacing"),
             ("lmnt Base", "6: WG-6 betas"), ("lmnt Base", "10: logSNR spacing"), ("Griffin-Lim", "32 iterations"),
             ("Griffin-Lim", "100 iterations"), ("white noise", "at the original's RMS")]
    assert set(names) <= set(rows) and any(k[1].startswith("6: tuned, ") for k in rows)
    assert rows["polydiff tiny", "6: WG-6 betas"][2] == "355,409"
    assert rows["Base", "6: WG-6 betas"][2] == rows["lmnt Base", "6: WG-6 betas"][2] == "15,920,993"
    log_mel = {key: float(cells[5]) for key, cells in rows.items() if key in names}
    assert all(math.isfinite(v) and v >= 0 for v in log_mel.values())
    assert log_mel["Griffin-Lim", "32 iterations"] < log_mel["white noise", "at the original's RMS"]
    for name in ("spectrograms.png", "original.wav", "tiny_6.wav", "tiny_6_tuned.wav", "Base_6.wav",
                 "lmnt_Base_6.wav", "griffinlim_32.wav"):
        assert (tmp_path / f"audio_quality_{name}").is_file(), name
