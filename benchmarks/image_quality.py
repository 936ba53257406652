"""Sample quality per unit of compute on the 8x8 digits: polydiff against denoising-diffusion-pytorch.

The peer is lucidrains' denoising-diffusion-pytorch 2.3.4 (https://github.com/lucidrains/denoising-diffusion-pytorch),
its class-conditional classifier-free-guidance Unet + GaussianDiffusion; both train from scratch on the same CPU time.

    python -m polydiff.benchmarks.image_quality [--seconds 150 --num 1000 --peer-unguided]
    python -m polydiff.benchmarks.image_quality --quick --out /tmp/image_quality.md   # smoke run, ~1-2 min

Data: scikit-learn's 1797 digits, a fixed stratified 80/20 split; both models see only the train split, in the
same random batches of 128. The two runs are interleaved in turns of a few seconds, each on its own clock (its
first step, one-off set-up, untimed), so both meet the same background load. polydiff: the digits recipe's
model, EDM objective, AdamW, clipping, condition dropout and EMA, its warm-up + cosine learning rate stretched
over the time budget, in a bare loop on the split tensor (the recipe's ``digits`` data set holds out a random
``val_fraction`` of all 1797 images, not this split). Peer: its Trainer's defaults but the batch (16 there; Adam
1e-4, betas (0.9, 0.99), clip 1, EMA 0.995 every 10 steps; no flips: digits are not symmetric), the class's own
defaults (pred_noise, cosine betas, 1000 steps, condition dropout 0.5, guidance 6 with rescaled_phi 0.7) and its
README's 250 DDIM sampling steps.

Judge: a small CNN trained here on the real train split. Scores of class-conditional samples (num / 10 per
class): the Frechet distance (FID, Heusel et al. 2017) between the judge's 32-d penultimate features of the
samples and of the real test split (real train vs test is the floor), the judge's accuracy on the requested
labels, and memorization: nearest-neighbour L2 pixel distance to the train split against the same for the
real test images. Sample grids go to benchmarks/results/image_quality_*.png (beside --out if it is moved).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.linalg import sqrtm
from torch import nn
from torch.nn import functional as F

from ..core.conditioning import select_conditions
from ..media import Image, save_media
from ..modalities.image.digits import load_digits
from ..modalities.image.writer import grid, to_pixels
from ..pipeline import DiffusionModel
from ..pipeline.build import build_denoiser, build_schedule
from ..recipes.files import load_recipe
from ..train.build import build_objective
from ..train.ema import EMA
from ..train.lr import lr_factor
from .report import BENCHMARKS_MD, machine, write_section

ROOT = Path(__file__).resolve().parents[1]  # the polydiff package (and repository) root
RECIPE = ROOT / "recipes" / "image" / "digits.toml"
RESULTS = Path(__file__).resolve().parent / "results"
PEER = "denoising-diffusion-pytorch==2.3.4"
FEATURES = 32  # judge feature dimension: small, so 360 test images give a stable covariance


def split_digits(seed: int = 0):
    """(x_train, y_train, x_test, y_test): images (N, 1, 8, 8) in [-1, 1], a stratified 80/20 split."""
    from sklearn.model_selection import train_test_split

    x, y = load_digits()
    train, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y.numpy(), random_state=seed)
    train, test = torch.as_tensor(train), torch.as_tensor(test)
    return x[train], y[train], x[test], y[test]


class Run:
    """One model's time-budgeted training on the batches ``draw`` gives: ``step`` adds its own duration to ``used``,
    except the first step's (one-off kernel and allocator set-up, seconds on a loaded machine), kept in ``first``."""

    def __init__(self, x, y, batch: int, seed: int):
        self.x, self.y, self.batch, self.steps, self.used, self.first = x, y, batch, 0, 0.0, 0.0
        self.order = torch.Generator().manual_seed(seed)  # the same batches, in the same order, for both models

    def draw(self) -> tuple[torch.Tensor, dict]:
        """The next batch (x0, cond): random rows of x with their labels."""
        idx = torch.randint(len(self.x), (self.batch,), generator=self.order)
        return self.x[idx], {"class_labels": self.y[idx]}

    def step(self) -> None:
        start = time.perf_counter()
        self.update(*self.draw())
        if self.steps == 0:
            self.first = time.perf_counter() - start
        else:
            self.used += time.perf_counter() - start
        self.steps += 1


class PolydiffRun(Run):
    """A recipe's model, objective, AdamW, clipping, condition dropout and EMA (those it sets) in a bare loop;
    ``cfg``: the recipe (default: the digits one), ``shape``: an example's (default: x's rows')."""

    def __init__(self, x, y, seconds: float, seed: int, cfg=None, shape: tuple[int, ...] | None = None):
        self.cfg = cfg = cfg or load_recipe(RECIPE, [f"train.seed={seed}"])
        super().__init__(x, y, cfg.data.batch_size, seed)
        torch.manual_seed(seed)
        self.seconds, self.schedule, self.shape = seconds, build_schedule(cfg), shape or tuple(x.shape[1:])
        self.model = build_denoiser(cfg, self.shape, self.schedule).train()
        self.objective, self.null = build_objective(cfg, self.schedule), self.model.backbone.null_cond
        t, o = cfg.train, cfg.optim
        self.ema = EMA(self.model, t.ema_decay, t.ema_halflife_steps, t.ema_warmup, t.ema_rampup_ratio) if (
            t.ema_decay is not None or t.ema_halflife_steps is not None) else None
        self.opt = torch.optim.AdamW(self.model.parameters(), o.lr, betas=o.betas, eps=o.eps,
                                     weight_decay=o.weight_decay)

    def update(self, x0, cond) -> None:
        o, t, step = self.cfg.optim, self.cfg.train, self.steps
        total = max(step + 1, 1 + round((step - 1) * self.seconds / self.used)) if self.used else 10**9  # in budget
        for group in self.opt.param_groups:  # the recipe's schedule over those steps, warm-up at most 10% of them
            group["lr"] = o.lr * lr_factor(step, min(o.warmup_steps, total // 10), total, o.lr_schedule)
        g = torch.Generator().manual_seed(t.seed * 1_000_003 + step)
        draws = self.objective.draw(x0, g)
        if t.cond_drop_prob > 0:
            cond = select_conditions(cond, self.null, torch.rand(len(x0), generator=g) >= t.cond_drop_prob)
        loss = self.objective.loss(self.model, x0, draws, cond).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if o.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
        self.opt.step()
        if self.ema is not None:
            self.ema.update(self.model)

    def finish(self) -> DiffusionModel:
        if self.ema is not None:
            self.model.load_state_dict(self.ema.full_state())
        self.model.eval().requires_grad_(False)
        return DiffusionModel.build(self.cfg, self.shape, self.model, self.schedule)


def interleave(runs: list[Run], seconds: float, turn: float) -> None:
    """Train each run for ``seconds`` on its own clock, in turns of ``turn`` seconds, so all meet the same load."""
    while any(run.used < seconds for run in runs):
        for run in runs:
            end = min(seconds, run.used + turn)
            while run.used < end:
                run.step()


def peer_modules():
    try:
        from denoising_diffusion_pytorch import classifier_free_guidance
        from ema_pytorch import EMA as PeerEMA
    except ImportError:
        print(f"image_quality compares against {PEER}: pip install '{PEER}' (or -e '.[bench]')", file=sys.stderr)
        raise SystemExit(2)
    classifier_free_guidance.tqdm = lambda steps, **_: steps  # no progress bar per sampling run
    return classifier_free_guidance, PeerEMA


class PeerRun(Run):
    def __init__(self, x, y, batch: int, seed: int, lr: float, sampling_steps: int):
        super().__init__((x + 1) / 2, y, batch, seed)  # the peer takes images in [0, 1]
        cfg_module, PeerEMA = peer_modules()
        torch.manual_seed(seed)
        unet = cfg_module.Unet(dim=16, dim_mults=(1, 2, 4), num_classes=10, cond_drop_prob=0.5, channels=1)  # 8->4->2
        self.model = cfg_module.GaussianDiffusion(unet, image_size=8, timesteps=1000, sampling_timesteps=sampling_steps)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr, betas=(0.9, 0.99))
        self.ema = PeerEMA(self.model, beta=0.995, update_every=10)

    def update(self, x0, cond) -> None:
        loss = self.model(x0, classes=cond["class_labels"])
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad()
        self.ema.update()

    def finish(self):
        return self.ema.ema_model.eval().requires_grad_(False)


def sample_peer(diffusion, labels: torch.Tensor, guidance: float, seed: int) -> torch.Tensor:
    """Samples in [-1, 1]; guidance 1 bypasses ``forward_with_cond_scale``, which returns a bare tensor
    there that ``model_predictions`` (2.3.4) would unpack as a pair."""
    torch.manual_seed(seed)
    unet = diffusion.model
    if guidance == 1.0:
        unet.forward_with_cond_scale = lambda *a, cond_scale, rescaled_phi: (unet(*a, cond_drop_prob=0.0), None)
    try:
        return diffusion.sample(classes=labels, cond_scale=guidance) * 2 - 1
    finally:
        unet.__dict__.pop("forward_with_cond_scale", None)


def counted(module: nn.Module, draw, num: int):
    """(samples, network evaluations per sample, seconds) of ``draw()``, counting the rows ``module`` sees (the
    peer's guidance calls ``Unet.forward`` directly, which hooks miss: its first layer is counted)."""
    rows = [0]
    hook = module.register_forward_hook(lambda _m, args, _out: rows.__setitem__(0, rows[0] + len(args[0])))
    start = time.perf_counter()
    try:
        x = draw()
    finally:
        hook.remove()
    return x.clamp(-1, 1), rows[0] / num, time.perf_counter() - start


def train_judge(x, y, epochs: int, seed: int) -> nn.Sequential:
    """A small CNN classifier; ``judge[:-1]`` gives its FEATURES-d penultimate features."""
    torch.manual_seed(seed)
    judge = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 16, FEATURES), nn.ReLU(),
                          nn.Linear(FEATURES, 10))
    opt = torch.optim.Adam(judge.parameters(), 1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            loss = F.cross_entropy(judge(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return judge.eval().requires_grad_(False)


def frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^1/2) of two feature sets (rows)."""
    a, b = a.double().numpy(), b.double().numpy()
    eps = 1e-6 * np.eye(a.shape[1])  # dead ReLU features have zero variance: keep sqrtm's argument regular
    ca, cb = np.cov(a, rowvar=False) + eps, np.cov(b, rowvar=False) + eps
    root = sqrtm(ca @ cb)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * np.real(root)))


def nearest(x: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x.flatten(1), train.flatten(1)).min(1).values


def save_grid(x: torch.Tensor, per: int, stem: Path) -> str:
    """The first 10 samples of each class, a row per class."""
    rows = x.view(10, per, *x.shape[1:])[:, :10].reshape(-1, *x.shape[1:])
    path = save_media(Image(grid(to_pixels(rows, (-1.0, 1.0)), columns=min(10, per))), stem)
    return (path.relative_to(ROOT) if path.is_relative_to(ROOT) else path).as_posix()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150, help="training wall time per model")
    parser.add_argument("--num", type=int, default=1000, help="samples per model (a multiple of 10)")
    parser.add_argument("--peer-lr", type=float, nargs="+", default=[1e-4, 1e-3],
                        help="the peer trains once per value: its Trainer's default 1e-4, and polydiff's 1e-3")
    parser.add_argument("--peer-sampling-steps", type=int, default=250, help="DDIM steps (the peer's README)")
    parser.add_argument("--peer-unguided", action="store_true", help="also sample the peer unguided (slow)")
    parser.add_argument("--judge-epochs", type=int, default=30)
    parser.add_argument("--slice", type=float, default=2.0, help="seconds each model trains per turn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 s each, 100 samples, 25 DDIM steps")
    parser.add_argument("--out", type=Path, default=BENCHMARKS_MD, help="markdown file to write the section into")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.num, args.peer_sampling_steps, args.judge_epochs = 10, 100, 25, 10
    results = RESULTS if args.out.resolve() == BENCHMARKS_MD else args.out.resolve().parent
    x_train, y_train, x_test, y_test = split_digits(args.seed)
    print(f"digits: {len(x_train)} train / {len(x_test)} test images; {machine()}")

    runs = {"polydiff": PolydiffRun(x_train, y_train, args.seconds, args.seed)}
    peers = {f"peer, lr {lr:g}": lr for lr in args.peer_lr}
    for name, lr in peers.items():
        runs[name] = PeerRun(x_train, y_train, runs["polydiff"].batch, args.seed, lr, args.peer_sampling_steps)
    params = {name: sum(p.numel() for p in run.model.parameters()) for name, run in runs.items()}
    params["peer"] = params[next(iter(peers))]
    print(f"parameters: polydiff {params['polydiff']:,}, peer {params['peer']:,}")
    interleave(list(runs.values()), args.seconds, args.slice)
    print(", ".join(f"{name}: {run.steps} steps in {run.used:.1f} s (+ {run.first:.1f} s untimed first step)"
                    for name, run in runs.items()))
    ours, trained_peers = runs["polydiff"].finish(), {name: runs[name].finish() for name in peers}

    judge = train_judge(x_train, y_train, args.judge_epochs, args.seed)
    test_accuracy = float((judge(x_test).argmax(1) == y_test).float().mean())
    features = judge[:-1]
    test_features, test_nn = features(x_test), nearest(x_test, x_train)
    floor, threshold = frechet(features(x_train), test_features), float(torch.quantile(test_nn, 0.01))
    print(f"judge: test accuracy {test_accuracy:.3f}; FD real train vs test {floor:.2f}")

    per = args.num // 10
    labels = torch.arange(10).repeat_interleave(per)
    cond = {"class_labels": labels}
    draws = [("polydiff", f"{ours.sampling.guidance:g} (default)", ours.denoiser,
              lambda: ours.sample(len(labels), cond=cond, seed=args.seed)),
             ("polydiff", "1 (none)", ours.denoiser,
              lambda: ours.sample(len(labels), guidance=1.0, cond=cond, seed=args.seed)),
             *[(name, "6 (default)", peer.model.init_conv, lambda peer=peer: sample_peer(peer, labels, 6.0, args.seed))
               for name, peer in trained_peers.items()]]
    if args.peer_unguided:
        draws += [(name, "1 (none)", peer.model.init_conv, lambda peer=peer: sample_peer(peer, labels, 1.0, args.seed))
                  for name, peer in trained_peers.items()]
    rows, scores, grids = [], {}, []
    for name, guidance, module, draw in draws:
        x, nfe, seconds = counted(module, draw, len(labels))
        accuracy = float((judge(x).argmax(1) == labels).float().mean())
        scores[name, guidance], nn_dist = frechet(features(x), test_features), nearest(x, x_train)
        if "default" in guidance:
            grids.append(save_grid(x, per, results / f"image_quality_{name.replace(', lr ', '_lr')}"))
        run = runs[name]
        rows.append(f"| {name} | {guidance} | {run.steps} in {run.used:.0f} s | {nfe:.0f} | {seconds:.1f} | "
                    f"{scores[name, guidance]:.2f} | {accuracy:.3f} | {float(nn_dist.median()):.2f} | "
                    f"{float((nn_dist < threshold).float().mean()):.1%} |")
        print(rows[-1])
    rows.append(f"| real test images | - | - | - | - | {floor:.2f} (train vs test: the floor) | {test_accuracy:.3f} | "
                f"{float(test_nn.median()):.2f} | 1% (by construction) |")

    fd_ours, fd_peer = scores["polydiff", draws[0][1]], min(scores[name, "6 (default)"] for name in peers)
    ratio = fd_ours / fd_peer
    command = " ".join(["python -m polydiff.benchmarks.image_quality", *argv])
    quick = " - QUICK SMOKE RUN, numbers meaningless" if args.quick else ""
    md = f"""## Image quality per unit of compute (digits: polydiff vs denoising-diffusion-pytorch){quick}

Command: `{command}`. Machine: {machine()}.

Both models train from scratch for {args.seconds:g} s of wall time each (interleaved in {args.slice:g} s turns, so both
meet the same background load) on a stratified 80% split of scikit-learn's digits ({len(x_train)} images, the same
batches of {runs['polydiff'].batch}), then draw {args.num} class-conditional samples ({per} per class). polydiff: the
`recipes/image/digits.toml` model ({params['polydiff']:,} parameters), objective, optimiser, EMA and condition
dropout in a bare loop on the split (the recipe's data set would hold out its own random 5%), the learning-rate
schedule stretched over the steps the budget allows; heun, {ours.sampling.steps} steps. Peer: {PEER} (lucidrains),
`classifier_free_guidance.Unet(dim=16, dim_mults=(1, 2, 4))` + `GaussianDiffusion` ({params['peer']:,} parameters),
its Trainer's and the class's defaults but the batch, trained once per learning rate (Adam {" and ".join(f"{lr:g}" for lr in args.peer_lr)}: its default, and polydiff's; EMA 0.995, pred_noise, cosine betas,
condition dropout 0.5, guidance 6 with rescaled_phi 0.7); DDIM, {args.peer_sampling_steps} steps. Judge: a small CNN
trained on the train split (test accuracy {test_accuracy:.3f}). FD: the Frechet distance (FID's formula, Heusel et
al. 2017) between its {FEATURES}-d penultimate features of the samples and of the {len(x_test)} real test images.
"NN to train": the L2 pixel distance (range [-1, 1]) to the nearest training image; "closer than test p1": the
share of samples nearer a training image than 99% of real test images are. NFE: network evaluations per sample.
Each model's first training step (one-off set-up: {", ".join(f"{run.first:.1f} s {name}" for name, run in runs.items())})
is not timed.

| model | guidance | training steps | NFE | sampling s | FD to test (lower is better) | judge accuracy | NN to train (median) | closer than test p1 |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Sample grids (a row per class, guided): {", ".join(f"`{g}`" for g in grids)}.

With the same training time polydiff's FD (at its default guidance) is {ratio:.2f}x the peer's best ({fd_ours:.2f} vs
{fd_peer:.2f}; target: at most 0.5x, {"met" if ratio <= 0.5 else "missed"}) after {runs['polydiff'].steps} optimiser steps against the
peer's {" / ".join(str(runs[name].steps) for name in peers)}; real held-out digits score {floor:.2f}. Samples that copied training images would sit much nearer
them than real held-out digits do (median {float(test_nn.median()):.2f}), with a share far above 1% in the last column.
"""
    print(md)
    write_section("image_quality", md, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
