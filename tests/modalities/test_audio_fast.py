"""The fast WaveGrad inference path (``wavegrad_fast``) and its vocode options: the same function as the backbone
(fp32 to rounding, bf16 within a stated tolerance), "auto" precision is bf16 only on an AVX-512 CPU, and
``polydiff vocode --precision / --threads`` reach it."""

from __future__ import annotations

import pytest
import soundfile
import torch

from polydiff.cli import main
from polydiff.modalities.audio import wavegrad_fast
from polydiff.modalities.audio.vocode import vocode_mels
from polydiff.modalities.audio.wavegrad import WaveGrad, WaveGradOptions
from polydiff.modalities.audio.wavegrad_fast import FastWaveGrad, has_avx512, resolve_precision
from polydiff.modalities.audio.writer import to_waves
from polydiff.registry import BackboneSpec

BF16_RTOL = 3e-2  # bf16 keeps 8 mantissa bits (~0.4% a rounding); an untrained Base network's relative L2 error: 0.5%
needs_avx512 = pytest.mark.skipif(not has_avx512(), reason="bf16 on a CPU without AVX-512 is emulated (slow)")


def network(out_factor: int = 1, **options) -> WaveGrad:
    torch.manual_seed(0)
    opts = WaveGradOptions(**{"preset": "tiny", "n_mels": 16, **options})
    return WaveGrad(opts, BackboneSpec((1, 4 * opts.hop_length), out_factor=out_factor)).eval()


def inputs(net: WaveGrad, frames: int = 6, batch: int = 2):
    g = torch.Generator().manual_seed(1)
    hop = net.options.hop_length
    mel = torch.randn(batch, net.options.n_mels, frames, generator=g) - 5
    return mel, torch.randn(batch, 1, frames * hop, generator=g), torch.tensor([0.3, 0.9][:batch])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("options, out_factor", [({}, 1), ({"ublocks_per_level": 2}, 1), ({}, 2),
                                                 ({"hop_length": 256, "factors": (4, 4, 4, 2, 2)}, 1)])
def test_the_fast_network_is_the_backbones_function_in_fp32(options, out_factor):
    net = network(out_factor, **options)
    mel, x, c = inputs(net)
    with torch.inference_mode():
        plain = net.decode(x, c, net.encode_mel(mel))
        fast = FastWaveGrad(net, torch.float32)
        out = fast.decode(x, c, fast.encode(mel))
    assert out.shape == plain.shape == (2, out_factor, x.shape[-1]) and out.dtype == torch.float32
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-5 * float(plain.abs().max()))


def test_the_cached_conditioning_is_reused_unchanged_across_steps():
    net = network()
    mel, x, c = inputs(net)
    fast = FastWaveGrad(net, torch.float32)
    with torch.inference_mode():
        cached = fast.encode(mel)
        kept = [t.clone() for t in cached]
        first = fast.decode(x, c, cached)
        fast.decode(2 * x, c / 2, cached)  # another step: nothing may be written into the cache
        assert all(torch.equal(a, b) for a, b in zip(cached, kept))
        torch.testing.assert_close(fast.decode(x, c, cached), first, rtol=0, atol=0)


@needs_avx512
def test_the_fast_network_in_bf16_is_within_tolerance():
    net = network()
    mel, x, c = inputs(net)
    with torch.inference_mode():
        plain = net.decode(x, c, net.encode_mel(mel))
        fast = FastWaveGrad(net, torch.bfloat16)
        out = fast.decode(x, c, fast.encode(mel))
    assert out.dtype == torch.float32 and relative(out, plain) < BF16_RTOL


def test_auto_precision_is_bf16_only_on_an_avx512_cpu(monkeypatch):
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto", "cuda") == "fp32"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert resolve_precision("auto", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16")


def test_threads_follow_omp_num_threads_else_the_physical_cores(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert wavegrad_fast.set_cpu_threads() == 1 == torch.get_num_threads()
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert wavegrad_fast.set_cpu_threads() == wavegrad_fast.physical_cores() == torch.get_num_threads()
        assert wavegrad_fast.set_cpu_threads(1) == 1
    finally:
        torch.set_num_threads(before)


def test_vocoding_fast_equals_the_plain_path_in_fp32_and_compile_is_off_by_default(tiny, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(fn) or fn)
    mel = torch.randn(80, 30, generator=torch.Generator().manual_seed(2)) - 5
    options = dict(sigmas=torch.tensor([0.1, 0.02, 0.0]), chunk=16, overlap=4, seed=3)  # low noise: not all clipped
    plain = vocode_mels(tiny, [mel], precision="fp32", fast=False, **options)[0]
    fast = vocode_mels(tiny, [mel], precision="fp32", **options)[0]
    assert not compiled and (plain.abs() < 0.99).float().mean() > 0.5
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)
    vocode_mels(tiny, [mel], precision="fp32", compile=True, **options)
    assert len(compiled) == 1  # opt-in: the fast decode goes through torch.compile


@needs_avx512
def test_vocoding_in_bf16_stays_close_to_fp32(tiny):
    mel = torch.randn(80, 30, generator=torch.Generator().manual_seed(2)) - 5
    options = dict(sigmas=torch.tensor([0.1, 0.02, 0.0]), seed=3)
    ref = vocode_mels(tiny, [mel], precision="fp32", **options)[0]
    for fast in (True, False):  # the fast network's weights in bf16; the plain one under autocast
        out = vocode_mels(tiny, [mel], precision="bf16", fast=fast, **options)[0]
        assert out.dtype == torch.float32 and relative(out, ref) < BF16_RTOL


def test_the_vocode_command_takes_precision_and_threads(tiny, tmp_path):
    mel = torch.randn(80, 24, generator=torch.Generator().manual_seed(5)) - 5
    torch.save(mel, tmp_path / "m.pt")
    before = torch.get_num_threads()
    try:
        assert main(["vocode", str(tiny.source), "--mel", str(tmp_path / "m.pt"), "--out", str(tmp_path / "a.wav"),
                     "--device", "cpu", "--precision", "fp32", "--threads", "1", "--seed", "4"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    written = soundfile.read(str(tmp_path / "a.wav"), dtype="float32")[0]
    (wave,) = vocode_mels(tiny, [mel], precision="fp32", seed=4)
    expected = to_waves(wave[None, None], tiny.config.data.range)[0]
    assert abs(written - expected).max() <= 2 / 32768
    with pytest.raises(SystemExit):
        main(["vocode", str(tiny.source), "--mel", str(tmp_path / "m.pt"), "--out", str(tmp_path / "b.wav"),
              "--precision", "fp16"])
