"""Vocoding mels of any length in bounded memory: overlapping chunks, noise by absolute sample index, crossfades.

A mel of F frames is cut into chunks of ``chunk`` frames starting every ``chunk - overlap`` frames (the last one
shorter); each chunk is sampled on its own, chunks of the same length from every input together in batches, and
the waveforms are joined by crossfading across each overlap of ``overlap * hop`` samples: linear (1 - u, u), or
equal power (cos, sin of pi u / 2). The network never sees more than ``chunk`` frames, so memory is bounded by
the chunk and the batch, not by the input's length.

Noise is drawn by absolute sample index, not by chunk: draw k of waveform sample n of input i (k = 0 the starting
noise, k >= 1 the sampler's k-th draw) comes from a generator seeded by (seed + i, k, n // NOISE_BLOCK), and a
stochastic sampler (ddpm, euler_ancestral, ...) draws through a noise function (``PositionNoise``, the "noise
function" of ``core.utils.randn_like``), so every chunk covering sample n draws the same numbers there at every
step (EDM's per-sample RNG taken down to the sample; Karras et al. 2022). A denoiser with a finite receptive field
(WaveGrad: about 5 frames each way per call, about steps x 5 over a run) then gives chunks equal to the whole-input
result wherever they are farther than that from their own edges, with any sampler, and the crossfade joins two
agreeing signals: ``overlap`` should exceed twice that reach.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ...core.utils import NoiseFn
from ...data.transforms import example_seed

NOISE_BLOCK = 4096  # waveform samples per noise generator
CROSSFADES = ("linear", "equal_power")

# (mel (B, n_mels, frames), starting noise (B, 1, frames * hop), the noise function of the sampler's draws)
#   -> waveforms (B, 1, frames * hop)
ChunkSampler = Callable[[torch.Tensor, torch.Tensor, NoiseFn], torch.Tensor]


@dataclass(frozen=True)
class Chunk:
    """Frames [start, stop) of input ``item``, the ``number``-th chunk of that input."""

    item: int
    number: int
    start: int
    stop: int


def plan_chunks(frames: Sequence[int], chunk: int, overlap: int) -> list[Chunk]:
    """The chunks of inputs of ``frames`` frames each: starts 0, chunk - overlap, ... while the previous chunk
    stops short of the end; consecutive chunks overlap by exactly ``overlap`` frames, three never do (2 overlap
    <= chunk)."""
    if chunk < 1 or overlap < 0 or 2 * overlap > chunk:
        raise ValueError(f"need chunk >= 1 and 0 <= overlap <= chunk / 2, got chunk {chunk}, overlap {overlap}")
    chunks = []
    for item, length in enumerate(frames):
        start, number = 0, 0
        while True:
            stop = min(start + chunk, length)
            chunks.append(Chunk(item, number, start, stop))
            if stop == length:
                break
            start, number = stop - overlap, number + 1
    return chunks


def block_noise(seed: int, start: int, stop: int, draw: int = 0) -> torch.Tensor:
    """Standard normal noise (stop - start,) for samples [start, stop) of draw ``draw`` of the utterance of ``seed``:
    block b of ``NOISE_BLOCK`` samples is drawn from a generator seeded by hashing (seed, draw, b), so any slice
    equals the same slice of the whole utterance's noise. Drawn on the CPU in float32 (the same numbers on every
    device)."""
    first, last = start // NOISE_BLOCK, -(-stop // NOISE_BLOCK)
    blocks = [torch.randn(NOISE_BLOCK, generator=torch.Generator().manual_seed(example_seed(seed, draw, b)))
              for b in range(first, last)]
    offset = start - first * NOISE_BLOCK
    return torch.cat(blocks)[offset: offset + stop - start] if blocks else torch.zeros(0)


class PositionNoise:
    """The noise of a batch of chunks by absolute sample index: chunk j covers samples spans[j] of the utterance of
    seeds[j]. ``draw(k)`` is draw k of every chunk, (B, 1, T); called as a noise function (``core.utils.randn_like``)
    the k-th call returns draw k (k = 1, 2, ...; draw 0 is the starting noise), so a sampler's k-th draw is the same
    function of (utterance, k, sample index) in every chunk and in the whole input."""

    def __init__(self, seeds: Sequence[int], spans: Sequence[tuple[int, int]]):
        self.seeds, self.spans, self.draws = list(seeds), list(spans), 0

    def draw(self, k: int) -> torch.Tensor:
        return torch.stack([block_noise(s, a, b, k) for s, (a, b) in zip(self.seeds, self.spans)])[:, None]  # (B, 1, T)

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        self.draws += 1
        return self.draw(self.draws)


def fades(length: int, crossfade: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(fade-out, fade-in) over ``length`` samples at u = (k + 1/2) / length: linear 1 - u and u (they sum to 1),
    equal power cos and sin of pi u / 2 (their squares sum to 1)."""
    u = (torch.arange(length, dtype=torch.float64) + 0.5) / length
    if crossfade == "linear":
        return (1 - u).float(), u.float()
    if crossfade == "equal_power":
        return torch.cos(math.pi / 2 * u).float(), torch.sin(math.pi / 2 * u).float()
    raise ValueError(f"crossfade must be one of {CROSSFADES}, got {crossfade!r}")


def chunk_weights(c: Chunk, last: bool, overlap: int, hop: int, crossfade: str) -> torch.Tensor:
    """The weight of each sample of chunk ``c`` (its (stop - start) * hop samples): a fade-in over its first
    ``overlap`` frames unless it is its input's first chunk, a fade-out over its last unless it is the last."""
    weights = torch.ones((c.stop - c.start) * hop)
    n = overlap * hop
    if n:
        fade_out, fade_in = fades(n, crossfade)
        if c.number > 0:
            weights[:n] *= fade_in
        if not last:
            weights[-n:] *= fade_out
    return weights


def vocode_chunks(sample: ChunkSampler, mels: Sequence[torch.Tensor], hop: int, *, seed: int = 0, chunk: int = 512,
                  overlap: int = 64, batch: int = 8, crossfade: str = "linear", progress: bool = False,
                  device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Waveforms (frames * hop,) of log-mels ``mels`` (each (n_mels, frames)) sampled chunk by chunk with
    ``sample``; input i uses seed + i (as ``DiffusionModel.sample``'s sample i), whatever the chunking and batching."""
    from tqdm import tqdm

    frames = [m.shape[-1] for m in mels]
    plan = plan_chunks(frames, chunk, overlap)
    last = {c.item: c.number for c in plan}  # the number of each input's last chunk
    out = [torch.zeros(f * hop) for f in frames]
    by_length: dict[int, list[Chunk]] = {}
    for c in plan:
        by_length.setdefault(c.stop - c.start, []).append(c)
    with tqdm(total=len(plan), desc="vocode", unit="chunk", disable=not progress) as bar:
        for group in by_length.values():
            for i in range(0, len(group), batch):
                part = group[i: i + batch]
                mel = torch.stack([mels[c.item][:, c.start: c.stop] for c in part]).to(device)  # (B, n_mels, frames)
                noise = PositionNoise([seed + c.item for c in part], [(c.start * hop, c.stop * hop) for c in part])
                waves = sample(mel, noise.draw(0).to(device), noise)  # (B, 1, T)
                for c, wave in zip(part, waves[:, 0].float().cpu()):
                    weights = chunk_weights(c, c.number == last[c.item], overlap, hop, crossfade)
                    out[c.item][c.start * hop: c.stop * hop] += weights * wave
                bar.update(len(part))
    return out
