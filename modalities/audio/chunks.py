"""Vocoding mels of any length in bounded memory: overlapping chunks, noise by absolute sample index, crossfades.

A mel of F frames is cut into chunks of ``chunk`` frames starting every ``chunk - overlap`` frames (the last one
shorter); each chunk is sampled on its own, chunks of the same length from every input together in batches, and
the waveforms are joined by crossfading across each overlap of ``overlap * hop`` samples: linear (1 - u, u), or
equal power (cos, sin of pi u / 2). The network never sees more than ``chunk`` frames, so memory is bounded by
the chunk and the batch, not by the input's length.

The starting noise of waveform sample n of input i comes from a generator seeded by (seed + i, n // NOISE_BLOCK),
not from the chunk: every chunk covering sample n starts from the same number there (EDM's per-sample RNG taken
down to the sample; Karras et al. 2022). A denoiser with a finite receptive field (WaveGrad: about 5 frames each
way per call, about steps x 5 over a run) and a deterministic sampler then give chunks equal to the whole-input
result wherever they are farther than that from their own edges, and the crossfade joins two agreeing signals:
``overlap`` should exceed twice that reach. Stochastic samplers also draw noise at every step; the core's samplers
take generators, not a noise function, so those draws come from per-chunk generators (seed + i, chunk number) and
the chunks agree only in their starting noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

NOISE_BLOCK = 4096  # waveform samples per noise generator
CROSSFADES = ("linear", "equal_power")
_STEP_STREAM = 2**30  # offset of the per-chunk step-noise seeds from the starting-noise blocks'

# (mel (B, n_mels, frames), starting noise (B, 1, frames * hop), one generator per chunk) -> waveforms (B, 1, T)
ChunkSampler = Callable[[torch.Tensor, torch.Tensor, list], torch.Tensor]


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


def block_noise(seed: int, start: int, stop: int) -> torch.Tensor:
    """Standard normal noise (stop - start,) for samples [start, stop) of the utterance of ``seed``: block b of
    ``NOISE_BLOCK`` samples is drawn from a generator seeded seed * 2^31 + b, so any slice equals the same slice of
    the whole utterance's noise. Drawn on the CPU in float32 (the same numbers on every device)."""
    first, last = start // NOISE_BLOCK, -(-stop // NOISE_BLOCK)
    blocks = [torch.randn(NOISE_BLOCK, generator=torch.Generator().manual_seed(seed * 2**31 + b))
              for b in range(first, last)]
    offset = start - first * NOISE_BLOCK
    return torch.cat(blocks)[offset: offset + stop - start] if blocks else torch.zeros(0)


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
                noise = torch.stack([block_noise(seed + c.item, c.start * hop, c.stop * hop) for c in part])
                generators = [torch.Generator().manual_seed((seed + c.item) * 2**31 + _STEP_STREAM + c.number)
                              for c in part]
                waves = sample(mel, noise[:, None].to(device), generators)  # (B, T) -> (B, 1, T)
                for c, wave in zip(part, waves[:, 0].float().cpu()):
                    weights = chunk_weights(c, c.number == last[c.item], overlap, hop, crossfade)
                    out[c.item][c.start * hop: c.stop * hop] += weights * wave
                bar.update(len(part))
    return out
