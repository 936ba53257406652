"""The audio modality's first blocks: the WaveGrad backbone (sizes, hop validation, conditioning) and log-mel
features (frame alignment, presets, the magnitude / log conventions, checks of a given mel)."""

from __future__ import annotations

import math

import pytest
import torch

from polydiff.errors import UserError
from polydiff.modalities.audio.mel import MEL_PRESETS, MelConfig, check_mel, mel_spectrogram
from polydiff.modalities.audio.wavegrad import WaveGrad, WaveGradOptions
from polydiff.recipes.config import ConfigError
from polydiff.registry import BackboneSpec


def count(options: WaveGradOptions) -> int:
    with torch.device("meta"):
        model = WaveGrad(options, BackboneSpec((1, options.hop_length)))
    return sum(p.numel() for p in model.parameters())


def test_base_has_lmnt_wavegrads_parameter_count():
    """lmnt-com/wavegrad's model.py (WaveGrad(params), counted with torch) has 15,920,993 parameters with its 128 mel
    bins, 15,810,401 with 80 (its first conv 128 -> 768 becomes 80 -> 768); the paper reports 15M for Base. Large
    (paper: 23M) is our reading, one more UBlock per level: 23,911,777 with 80 mels."""
    assert count(WaveGradOptions(preset="base", n_mels=80)) == 15_810_401
    assert count(WaveGradOptions(preset="base", n_mels=128)) == 15_920_993
    assert count(WaveGradOptions(preset="large", n_mels=80)) == pytest.approx(23e6, rel=0.05)
    assert count(WaveGradOptions(preset="tiny")) < 500_000


def test_the_factors_must_multiply_to_the_hop():
    with pytest.raises(ConfigError, match=r"'factors' \(preset 'base'\) multiply to 5 x 5 x 3 x 2 x 2 = 300, but "
                                          r"'hop_length' is 256"):
        WaveGradOptions(preset="base", hop_length=256)
    WaveGradOptions(preset="base", hop_length=256, factors=(4, 4, 4, 2, 2))  # HiFi-GAN's hop fits other factors
    with pytest.raises(ConfigError, match=r"'up_channels' has 2 entries for the 5 levels of 'factors'"):
        WaveGradOptions(up_channels=(8, 8))
    with pytest.raises(ConfigError, match=r"'dilations' \(preset 'tiny'\) needs 4 per level, 8 for 2 levels"):
        WaveGradOptions(hop_length=6, factors=(3, 2), up_channels=(8, 8), down_channels=(4, 4))
    with pytest.raises(ConfigError, match=r"'factors' must be set: 'preset' is \"none\""):
        WaveGradOptions(preset="none")
    with pytest.raises(UserError, match=r"mono waveforms \(1, T\) with T a multiple of .*hop_length = 300"):
        WaveGrad(WaveGradOptions(), BackboneSpec((1, 1000)))


def tiny(out_factor: int = 1, **values) -> WaveGrad:
    torch.manual_seed(0)
    return WaveGrad(WaveGradOptions(n_mels=16, **values), BackboneSpec((1, 600), out_factor))


@pytest.mark.parametrize("frames", [1, 3, 10])
def test_output_has_the_waveforms_shape_for_any_number_of_frames(frames):
    model = tiny()
    x, mel = torch.randn(2, 1, frames * 300), torch.randn(2, 16, frames)
    assert model(x, torch.rand(2), {"mel": mel}).shape == (2, 1, frames * 300)
    assert tiny(out_factor=2)(x, torch.rand(2), {"mel": mel}).shape == (2, 2, frames * 300)


def test_a_mel_that_does_not_fit_the_waveform_is_refused_in_one_line():
    model, x = tiny(), torch.randn(2, 1, 900)
    for mel in (torch.randn(2, 16, 4), torch.randn(2, 80, 3)):
        with pytest.raises(UserError, match=r"cond\['mel'\] has shape .* need \(2, 16, 3\)") as err:
            model(x, torch.rand(2), {"mel": mel})
        assert "\n" not in str(err.value)


def test_gradients_reach_the_waveform_the_mel_and_every_weight():
    model = tiny()
    x, mel = torch.randn(2, 1, 600, requires_grad=True), torch.randn(2, 16, 2, requires_grad=True)
    model(x, torch.rand(2), {"mel": mel}).square().sum().backward()
    assert x.grad.abs().sum() > 0 and mel.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_the_mel_and_the_noise_level_both_change_the_output():
    model = tiny()
    x, mel, c_noise = torch.randn(2, 1, 600), torch.randn(2, 16, 2), torch.tensor([0.3, 0.9])
    with torch.no_grad():
        out = model(x, c_noise, {"mel": mel})
        assert (model(x, c_noise, {"mel": mel + 1}) - out).abs().flatten(1).amax(1).min() > 1e-3
        assert (model(x, c_noise + 1e-3, {"mel": mel}) - out).abs().flatten(1).amax(1).min() > 1e-3  # C = 5000
        # the noise-free mel features, computed once, give the same output
        torch.testing.assert_close(model.decode(x, c_noise, model.encode_mel(mel)), out, rtol=0, atol=0)


def test_mel_frames_align_with_the_hop():
    """F * hop samples -> F frames, the vocoder's alignment; a partial last frame is dropped."""
    for config in MEL_PRESETS.values():
        samples = 7 * config.hop_length
        assert mel_spectrogram(0.1 * torch.randn(2, 1, samples), config).shape == (2, config.n_mels, 7)
        assert mel_spectrogram(0.1 * torch.randn(samples + config.hop_length - 1), config).shape == (config.n_mels, 7)


def test_hifigan_preset_is_tacotron2_hifigans_convention():
    assert MEL_PRESETS["hifigan_22k"] == MelConfig(sample_rate=22050, n_fft=1024, hop_length=256, win_length=1024,
                                                   n_mels=80, f_min=0.0, f_max=8000.0, mel_scale="slaney",
                                                   norm="slaney", log="e", clamp=1e-5)
    assert MEL_PRESETS["wavegrad_24k"].n_mels == 128 and MEL_PRESETS["wavegrad_24k"].hop_length == 300


def _slaney_mel(f: float) -> float:
    """Slaney's mel scale (Auditory Toolbox; librosa's default): linear below 1 kHz, logarithmic above."""
    return 3 * f / 200 if f < 1000 else 15 + 27 * math.log(f / 1000) / math.log(6.4)


def test_a_tone_lands_in_its_mel_bin_and_doubling_it_adds_log_2():
    """Magnitudes (power 1), so twice the amplitude adds exactly log(2) in the config's base; a 1 kHz tone peaks in
    the filter whose Slaney-scale centre is nearest 1 kHz."""
    config = MEL_PRESETS["hifigan_22k"]
    t = torch.arange(20 * 256) / config.sample_rate
    tone = 0.25 * torch.sin(2 * math.pi * 1000 * t)
    mel = mel_spectrogram(tone, config)  # (80, 20)
    edges = torch.linspace(_slaney_mel(0), _slaney_mel(8000), 82)
    centre = edges[1:-1]
    assert mel.mean(1).argmax() == (centre - _slaney_mel(1000)).abs().argmin()
    loud = mel > config.floor + 1
    torch.testing.assert_close((mel_spectrogram(2 * tone, config) - mel)[loud], torch.full_like(mel[loud], math.log(2)),
                               rtol=0, atol=1e-4)
    ten = MelConfig(log="10")
    doubled = mel_spectrogram(2 * tone, ten) - mel_spectrogram(tone, ten)
    torch.testing.assert_close(doubled[loud], torch.full_like(doubled[loud], math.log10(2)), rtol=0, atol=1e-4)


def test_mel_config_refuses_impossible_values():
    with pytest.raises(ConfigError, match=r"'f_max' must be <= half of 'sample_rate' \(8000 Hz"):
        MelConfig(sample_rate=16000, f_max=9000.0)
    with pytest.raises(ConfigError, match=r"'win_length' must be <= 'n_fft' = 1024"):
        MelConfig(win_length=2048)


def speech_like(config: MelConfig) -> torch.Tensor:
    """A mel of a tone with silence at the end (real utterances have some), (1, n_mels, 12)."""
    wave = torch.zeros(1, 1, 12 * config.hop_length)
    wave[..., : 6 * config.hop_length] = 0.3 * torch.sin(torch.arange(6 * config.hop_length) * 0.3)
    return mel_spectrogram(wave, config)


def test_check_mel_accepts_a_fitting_mel_and_names_the_source_of_a_wrong_one():
    config = MEL_PRESETS["hifigan_22k"]
    mel = speech_like(config)
    check_mel(mel, config, "tts.npy")
    check_mel(mel[0], config, "tts.npy")
    bad = {
        r"tts\.npy: expected a mel spectrogram \(\(B,\) 80 mel bins, frames\), got shape \(1, 128, 12\)":
            torch.randn(1, 128, 12) - 5,
        r"tts\.npy: 1 of 960 mel values are NaN or infinite": mel.clone().index_put_((torch.tensor(0),) * 3,
                                                                                       torch.tensor(math.nan)),
        r"tts\.npy: the mel looks like log10: its minimum -5\.000 is log10\(1e-05\)": speech_like(MelConfig(log="10")),
        r"tts\.npy: every mel value is >= 0 .* linear magnitudes": mel.exp(),
        r"tts\.npy: mel values go down to -100\.000, below natural log\(1e-05\) = -11\.513": 20 * mel.clamp(min=-5),
    }
    for message, value in bad.items():
        with pytest.raises(UserError, match=message) as err:
            check_mel(value, config, "tts.npy")
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="looks like natural log"):  # the other way round
        check_mel(mel, MelConfig(log="10"), "tts.npy")
