"""Samplers vs diffusers on a Gaussian mixture with the exact denoiser; writes BENCHMARKS.md.

    python -m polydiff.benchmarks.samplers [--samples 512] [--workers 2] [--output BENCHMARKS.md]

For each DDPM schedule (``mixture.SCHEDULES``) and NFE budget, every deterministic polydiff sampler runs
on the standard grids (karras, logsnr, warped_logsnr, linspace, trailing) and on a tuned grid (``tuned_sigmas``, fitted
on a held-out batch), every diffusers scheduler config through its documented API
(``diffusers_schedulers``); all start from the same x_T = sigma_max n and are scored against the
PF-ODE reference (``mixture``). Stochastic samplers are scored by sliced W2 to fresh data.
Exit status 2 if diffusers is not installed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import betainc

from ..core.grids import sampling_sigmas
from ..core.samplers import SAMPLERS, STOCHASTIC
from .mixture import (
    SCHEDULES, largest_steps_within, make_problem, median_error, mode_flip_share, per_sample_error, sliced_w2,
)  # fmt: skip

NFES = (5, 10, 20, 40, 50)
TARGET_NFES = (5, 10, 20)
GRIDS = ("karras", "logsnr", "warped_logsnr", "linspace", "trailing")
# Option sets run besides each sampler's defaults.
ANGLE = {"variable": "angle", "sigma_data": 1.0}  # the data's per-coordinate std is ~1.05
VARIANTS = {
    "unipc": [{"variant": "bh1"}, {"order": 3}, {"order": 3, "variant": "bh1"}, {"order": 3, **ANGLE}],
    "dpmpp_2m": [{"midpoint": False}],
}
# (sampler, options, statistic of the per-sample error that the tuning minimizes): the median is the
# headline metric; the mean is dominated by the few samples that change mode, so it trades some median
# error for fewer flips.
TUNED = [("unipc", {}, "median"), ("unipc", {}, "mean"), ("unipc", {"order": 3}, "median"),
         ("unipc", {"order": 3, **ANGLE}, "median"), ("unipc", {"order": 3, **ANGLE}, "mean"),
         ("dpmpp_2m", {}, "median"), ("dpmpp_3m", {}, "median")]  # fmt: skip
TUNE_SAMPLES, TUNE_SEED, TUNE_EVALS = 256, 1000, 150
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One sampler configuration at one NFE budget on one schedule."""

    library: str
    schedule: str
    method: str
    config: str
    nfe: int
    steps: int
    calls: int
    error: float
    flips: float
    sw2: float
    stochastic: bool
    tuned: bool = False


# ---------------------------------------------------------------------------------------------------
# polydiff


class CountingDenoiser:
    """Wraps a denoiser and counts its calls (the NFE of a dry run)."""

    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x, sigma, cond=None):
        self.calls += 1
        return self.denoiser(x, sigma, cond)


def tuned_sigmas(n: int, sigma_lo: float, sigma_max: float, a: float, b: float) -> torch.Tensor:
    """n levels plus 0 with lambda = -log sigma warped by the regularized incomplete beta function:
    lambda_i = lambda_max + (lambda_lo - lambda_max) I_{i/(n-1)}(a, b). a = b = 1 is logSNR-uniform;
    a < 1 takes long steps at high noise, b < 1 at the low-noise end (cf. Sabour et al. 2024, 'Align
    Your Steps', who tune steps per model)."""
    lam_max, lam_lo = -math.log(sigma_max), -math.log(sigma_lo)
    lam = lam_max + (lam_lo - lam_max) * betainc(a, b, np.linspace(0.0, 1.0, n))
    return torch.tensor(np.append(np.exp(-lam), 0.0), dtype=torch.float64)


def run_polydiff(problem, name, options, sigmas, rows_meta, seed=0, batch=slice(None)):
    """Run one polydiff sampler and score it; returns a Row (metadata from ``rows_meta``)."""
    x = problem.x_T[batch].clone()
    generator = torch.Generator().manual_seed(seed) if name in STOCHASTIC else None
    out = SAMPLERS[name](problem.mixture, x, sigmas, generator=generator, **options)
    return score(problem, out, **rows_meta)


def score(problem, out, **meta) -> Row:
    return Row(
        schedule=problem.schedule_name, error=median_error(out, problem.reference),
        flips=mode_flip_share(problem.mixture, out, problem.reference_modes),
        sw2=sliced_w2(out, problem.true_samples) if bool(torch.isfinite(out).all()) else math.inf, **meta,
    )  # fmt: skip


def polydiff_calls(problem, name, options):
    """steps -> denoiser calls of ``name`` (on a one-sample probe)."""

    def calls(steps: int) -> int:
        counter = CountingDenoiser(problem.mixture)
        sigmas = sampling_sigmas(problem.schedule, steps, "logsnr")
        SAMPLERS[name](counter, problem.x_T[:1].clone(), sigmas, generator=torch.Generator(), **options)
        return counter.calls

    return calls


def label(options: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items())


def polydiff_rows(problem) -> list[Row]:
    rows = []
    for name in sorted(SAMPLERS):
        stochastic = name in STOCHASTIC
        for options in [{}] + ([] if stochastic else VARIANTS.get(name, [])):
            calls = polydiff_calls(problem, name, options)
            for nfe in NFES:
                steps = largest_steps_within(nfe, calls)
                if steps is None:
                    continue
                for grid in ("karras",) if stochastic else GRIDS:
                    meta = dict(library="polydiff", method=name, config=label({"grid": grid, **options}), nfe=nfe,
                                steps=steps, calls=calls(steps), stochastic=stochastic)  # fmt: skip
                    sigmas = sampling_sigmas(problem.schedule, steps, grid)
                    rows.append(run_polydiff(problem, name, options, sigmas, meta))
    return rows


def tune_grid(tune_problem, name, options, nfe, statistic) -> tuple[float, float, float]:
    """(sigma_lo, a, b) of ``tuned_sigmas`` minimizing the log of the per-sample error's ``statistic``
    ('median' or 'mean') on the held-out batch (Nelder-Mead over log-parameters, sigma_lo in [sigma_min, 2])."""
    sigma_min, sigma_max = tune_problem.schedule.sigma_min, tune_problem.schedule.sigma_max

    def params(p):
        return min(max(math.exp(p[0]), sigma_min), 2.0), *(min(max(math.exp(v), 0.1), 10.0) for v in p[1:])

    def objective(p):
        sigma_lo, a, b = params(p)
        sigmas = tuned_sigmas(nfe, sigma_lo, sigma_max, a, b)
        out = SAMPLERS[name](tune_problem.mixture, tune_problem.x_T.clone(), sigmas, **options)
        errors = per_sample_error(out, tune_problem.reference)
        error = float(errors.median() if statistic == "median" else errors.mean())
        return math.log(error) if math.isfinite(error) else 50.0

    p0 = np.log([0.15, 0.7, 0.9])
    simplex = np.array([p0, p0 + [0.7, 0, 0], p0 + [0, 0.5, 0], p0 + [0, 0, 0.5]])
    result = minimize(objective, p0, method="Nelder-Mead", options={"maxfev": TUNE_EVALS, "initial_simplex": simplex})
    return params(result.x)


def tuned_rows(problem, tune_problem) -> list[Row]:
    rows = []
    for name, options, statistic in TUNED:
        calls = polydiff_calls(problem, name, options)
        for nfe in TARGET_NFES:
            sigma_lo, a, b = tune_grid(tune_problem, name, options, nfe, statistic)
            grid = f"tuned-{statistic}(sigma_lo={sigma_lo:.3g},a={a:.2f},b={b:.2f})"
            config = label({"grid": grid, **options})
            meta = dict(library="polydiff", method=name, config=config, nfe=nfe, steps=nfe, calls=calls(nfe),
                        stochastic=False, tuned=True)  # fmt: skip
            grid = tuned_sigmas(nfe, sigma_lo, problem.schedule.sigma_max, a, b)
            rows.append(run_polydiff(problem, name, options, grid, meta))
    return rows


# ---------------------------------------------------------------------------------------------------
# diffusers


def diffusers_rows(problem) -> list[Row]:
    from . import diffusers_schedulers as ds

    _, beta_start, beta_end = SCHEDULES[problem.schedule_name]
    model = ds.EpsModel(problem.mixture, problem.schedule)
    sigma_max = problem.schedule.sigma_max
    rows = []
    for config in ds.deterministic_configs() + ds.stochastic_configs():
        make = lambda: ds.build(config, problem.schedule_name, beta_start, beta_end)  # noqa: E731
        calls = ds.calls_per_run(make, model, problem.x_T[:1], sigma_max)
        for nfe in NFES:
            steps = largest_steps_within(nfe, calls)
            if steps is None:
                continue
            model.calls = 0
            out = ds.run_scheduler(make(), steps, model, problem.x_T, sigma_max)
            rows.append(score(problem, out, library="diffusers", method=config.cls.replace("Scheduler", ""),
                              config=label(config.options), nfe=nfe, steps=steps, calls=model.calls,
                              stochastic=config.stochastic))  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------------
# Driver


def run_schedule(schedule_name: str, samples: int) -> tuple[list[Row], dict]:
    """Every row for one schedule, plus facts for the report (reference accuracy, noise floor, timing)."""
    from .report import quiet_diffusers

    diffusers = quiet_diffusers(1)
    start = time.time()
    problem = make_problem(schedule_name, samples, seed=0)
    tune_problem = make_problem(schedule_name, TUNE_SAMPLES, seed=TUNE_SEED, mixture=problem.mixture)
    rows = polydiff_rows(problem) + tuned_rows(problem, tune_problem) + diffusers_rows(problem)
    floor = sliced_w2(problem.mixture.sample(samples, torch.Generator().manual_seed(7))[0], problem.true_samples)
    facts = dict(sigma_min=problem.schedule.sigma_min, sigma_max=problem.schedule.sigma_max, sw2_floor=floor,
                 seconds=time.time() - start)  # fmt: skip
    return rows, facts


SETUP = """
Command: `{command}` (`make bench`); {seconds:.0f} s wall on {cpu}, {cores} cores, two worker processes (one per
schedule) with 1 torch thread each; torch {torch}, diffusers {diffusers}. Full results:
`benchmarks/results/samplers.csv`.

**Problem.** `random_mixture(dim=32, components=10, rank=0, std=0.3, spread=1.0, seed=0)`: ten isotropic
Gaussians in 32-D with means N(0, I) (pairwise distances ~8), stds 0.15-0.45 and unequal weights. The modes
never overlap, yet a coarse solver can steer a trajectory into the wrong basin while sigma is ~1-30, and the
small stds make the last steps stiff. Exact denoiser (`GaussianMixture.__call__`). Schedules: DDPM 'linear'
(beta 1e-4..0.02) and 'scaled_linear' (0.00085..0.012), T = 1000. {samples} samples start at x_T = sigma_max n
(sigma_max = the schedule's level at t = T - 1, seed 0). Reference: the PF ODE dx/dlambda = D - x
(lambda = -log sigma) by DOP853 with rtol = atol = 1e-9 down to sigma = 1e-4, then (x + D) / 2 (error
O(sigma^4) ~ 1e-16); solving with rtol = 1e-11 instead moves no sample by more than 6e-9.

**Metrics.** Error: median over samples of ||x - x_ref|| / sqrt(32). Flips: share of samples whose most
responsible component at sigma = 0 differs from the reference's. SW2: sliced Wasserstein-2 (256 directions)
to {samples} fresh true samples. NFE: each sampler gets the most steps whose denoiser calls fit the budget,
counted on a dry run (Heun / KDPM2 / dpmpp_2s: two per step but one for a last step to 0).

**diffusers.** Each scheduler through `set_timesteps`, `scale_model_input`, `step`, with
`prediction_type="epsilon"` and the matching `beta_schedule`. The model answers
eps = (x - D(x, sigma_t)) / sigma_t with sigma_t read off the timestep it is given (log-linear between
integers, the inverse of diffusers' `_sigma_to_t`) and x = input * sqrt(1 + sigma_t^2): the VP latent
z_t = x / sqrt(1 + sigma^2) for DDIM / PNDM / DPM-Solver / UniPC / DEIS, the scaled input for Euler / Heun /
LMS / KDPM2; every scheduler starts from the same x_T. Configs: 'linspace' and 'trailing' placements (both
start at t = T - 1; 'leading' does not and is left out), Karras sigmas and Lu lambdas where offered, orders
2 / 3, UniPC bh1 / bh2, DDIM / DDPM with clip_sample=False, PNDM with skip_prk_steps ({n_diffusers} deterministic
configs, {n_stochastic} stochastic ones; `DPMSolverSDEScheduler` needs torchsde, which is not installed); the best
per NFE is taken over all of them on the evaluation batch.

**polydiff.** Every sampler of `SAMPLERS` with its defaults (plus UniPC bh1 / order 3 / order 3 with D
interpolated in the VP angle arctan(sigma / sigma_data), sigma_data = 1 as the data's per-coordinate std is
~1.05, and dpmpp_2m with the exact phi_2 weight) on the `core.grids` grids karras (rho = 7), logsnr, linspace
and trailing, which span the schedule's [sigma_min, sigma_max] and end at 0, and warped_logsnr, a logSNR grid
warped by a fixed Kumaraswamy CDF that stops at a share 0.55 + 0.085 ln n of the logSNR range; its four constants
were fitted once on another mixture (seed 1, not this seed-0 one), so it counts as a standard grid. In addition these run on a tuned
grid: {tuned}. Its lambda = -log sigma is warped by a regularized incomplete beta function between sigma_max and
sigma_lo (`tuned_sigmas`), whose
(sigma_lo, a, b) are fitted by Nelder-Mead ({tune_evals} evaluations) to the median [or mean] error on a held-out batch
({tune_samples} other x_T, seed {tune_seed}) and then scored on the evaluation batch; the grid is specific to this
problem, as Align-Your-Steps grids are to a model. polydiff's last step sigma_last -> 0 is the 'gaussian' rule
D + w (x - D) of `core/samplers/exponential.py` (O(sigma^4) instead of the O(sigma^2) of x <- D).
"""


NOTES = """
**Notes.**
- Flip shares count samples out of {samples}: one sample is {one:.3f}, so differences of a few thousandths are
  sampling noise (binomial standard error sqrt(p / N), e.g. {se:.3f} at p = 0.01).
- diffusers' `UniPCMultistepScheduler(solver_type="bh1")` returns NaN with its default `final_sigmas_type="zero"`
  (B(h) = -h with h = inf in the last step); it is run with `"sigma_min"` instead.
- DPM-Solver++ 3M in diffusers (as in k-diffusion and the reference DPM-Solver code) weights
  D2 = h^2 D'' / 2 with h phi_3, half of the exact 2 h phi_3, which leaves the update second order
  asymptotically; polydiff's `dpmpp_3m` uses the exact weight (order 3 measured in
  `tests/core/test_high_order_samplers.py`). At a few steps the halved weight damps the extrapolation,
  which is not always worse.
- The diffusers solvers end with x <- D(x, sigma_last), whose error is O(sigma_last^2), and with 'linspace' /
  'trailing' placements sigma_last = sigma(t ~ T / n) is large: their curves flatten at high NFE. polydiff's
  standard grids end at sigma_min and take the O(sigma^4) 'gaussian' last step.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2, help="processes (one schedule each)")
    args = parser.parse_args(argv)
    try:
        import diffusers
    except ImportError:
        print("diffusers is not installed; install the bench extra (pip install -e '.[bench]') to run this benchmark.")
        return 2
    from . import sampler_tables as tables
    from .diffusers_schedulers import deterministic_configs, stochastic_configs
    from .report import write_section

    start = time.time()
    names = list(SCHEDULES)
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        outcomes = list(pool.map(run_schedule, names, [args.samples] * len(names)))
    rows = [asdict(row) for schedule_rows, _ in outcomes for row in schedule_rows]
    facts = {name: f for name, (_, f) in zip(names, outcomes)}
    tables.write_csv(rows, RESULTS / "samplers.csv")
    tables.plot(rows, names, NFES, TARGET_NFES, RESULTS / "samplers_error_vs_nfe.png")
    flags = argv if argv is not None else sys.argv[1:]
    setup = SETUP.format(
        command="python -m polydiff.benchmarks.samplers" + "".join(f" {a}" for a in flags),
        seconds=time.time() - start, cpu=tables.cpu_name(), cores=os.cpu_count(), torch=torch.__version__,
        diffusers=diffusers.__version__, samples=args.samples, n_diffusers=len(deterministic_configs()),
        n_stochastic=len(stochastic_configs()), tune_evals=TUNE_EVALS, tune_samples=TUNE_SAMPLES,
        tuned=", ".join(f"{n}({label(o)}) [{st}]" for n, o, st in TUNED).replace("()", ""),
        tune_seed=TUNE_SEED,
    )  # fmt: skip
    notes = NOTES.format(samples=args.samples, one=1 / args.samples, se=math.sqrt(0.01 / args.samples))
    plot_path = "benchmarks/results/samplers_error_vs_nfe.png"
    markdown = tables.compose(rows, facts, setup, notes, NFES, TARGET_NFES, plot_path)
    print("\n".join(tables.verdict_lines(rows, names, TARGET_NFES)))
    print(f"wrote {write_section('samplers', markdown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
