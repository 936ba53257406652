"""The training loop on accelerate: one code path for 1 CPU, N GPUs and several machines.

What each step sees is a pure function of (seed, step): the data order (``data_order``), the noise
(``objective.draw`` from a generator seeded by the step, drawn for the *global* batch and sliced per rank)
and the batch transforms' randomness (one generator per example, ``data.transforms``), so a resumed run and
a W-process run reproduce a one-process run (CONTRIBUTING.md, "Principles").
"""

from __future__ import annotations

import copy
import random
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn
from torch.utils.data import IterableDataset
from tqdm import tqdm

from ..core.conditioning import select_conditions
from ..data.examples import SKIPPED, example_shape
from ..data.transforms import apply_transforms, example_generators
from ..errors import TrainingStopped, UserError
from ..pipeline.build import build_denoiser, build_schedule
from ..pipeline.model import DiffusionModel, check_class_labels
from ..pipeline.resources import is_allocation_failure
from ..recipes.config import config_to_dict
from ..recipes.files import save_resolved
from ..recipes.schema import RecipeConfig
from .build import build_data, build_objective, build_transforms
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .ema import EMA
from .interrupt import DeferredInterrupt, Interrupted
from .loader import make_loader
from .lock import RunLock
from .logs import RunLog, plot_loss_curve
from .lr import make_lr_scheduler
from .periodic import classified, edm_error, sample_media, validation_loss
from .preflight import check_conditions, check_example_shape, check_precision, check_transforms, probe
from .resume import checkpoints_to_try, resume_from
from ..storage.output import make_output_dir, os_error_message, writing
from .sharding import Replicated, Sharded

MAX_SKIPPED_NAMES = 20  # names of unreadable files kept for the end-of-run report


class TrainingStep(nn.Module):
    """Denoiser + objective as one module, so that DDP sees the forward pass that makes the loss."""

    def __init__(self, denoiser: nn.Module, objective):
        super().__init__()
        self.denoiser, self.objective = denoiser, objective

    def forward(self, x0: torch.Tensor, draws: dict, cond: dict) -> torch.Tensor:
        return self.objective.loss(self.denoiser, x0, draws, cond)


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    last_loss: float
    nonfinite_skipped: int
    model_dir: Path | None
    steps_per_second: float
    skipped_examples: int = 0
    skipped_files: list[str] = field(default_factory=list)
    fp16_overflow_skipped: int = 0
    main_process: bool = True  # False on the other processes of a distributed run (they print nothing)


def _step_seed(seed: int, step: int, micro: int) -> int:
    return (seed * 1_000_003 + step) * 64 + micro


def _seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's ``random``, so that every global generator a checkpoint stores starts
    from the recipe's seed (and a resumed run's final checkpoint equals an uninterrupted one's)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class _Loader:
    """Something ``load_checkpoint`` can restore a part into: a ``load_state_dict`` callable."""

    def __init__(self, load):
        self.load_state_dict = load


class _Run:
    """The state of one training run and the pieces of its step; ``train`` drives it."""

    def __init__(self, cfg: RecipeConfig, resume: bool, progress: bool):
        t = cfg.train
        check_precision(cfg)
        # accelerate keeps one process-wide state; a second run in the same process (tests, notebooks) with
        # another precision must start from a clean one. The distributed setup (PartialState) is kept.
        AcceleratorState._reset_state()
        self.acc = acc = Accelerator(mixed_precision=t.mixed_precision, cpu=not torch.cuda.is_available())
        self.cfg, self.progress = cfg, progress
        self.run_dir = Path(t.out_dir) / cfg.name
        self.lock = self.log = self.batches = None
        if acc.is_main_process:
            make_output_dir(self.run_dir, "train.out_dir")
            self.lock = RunLock(self.run_dir).acquire()
        try:
            self._build(cfg, resume)
        except BaseException:
            self.close()
            raise

    def _build(self, cfg: RecipeConfig, resume: bool) -> None:
        t, acc = cfg.train, self.acc
        candidates = checkpoints_to_try(cfg, self.run_dir, resume)
        _seed_everything(t.seed)
        self.schedule = build_schedule(cfg)
        train_set, self.val_set = build_data(cfg)
        self.example_shape = example_shape(train_set)
        check_example_shape(cfg, self.example_shape)
        # weights, gradients, two AdamW moments, EMA and a sampling copy; sharding spreads all but the last
        copies = 1 + 5 / acc.num_processes if t.fsdp else 6
        denoiser = build_denoiser(cfg, self.example_shape, self.schedule, device=acc.device, copies=copies)
        self.null_cond = getattr(denoiser.backbone, "null_cond", {})
        self.objective = build_objective(cfg, self.schedule)
        self.transforms = build_transforms(cfg)
        check_transforms(self.transforms, self.example_shape)
        check_conditions(cfg, denoiser.backbone, probe(_first_example(train_set), self.transforms), train_set)
        self.sample_module = copy.deepcopy(denoiser).eval().requires_grad_(False) if acc.is_main_process else None
        self.sharding = (Sharded if t.fsdp else Replicated)(acc)
        self.step_module, self.optimizer = self.sharding.prepare(TrainingStep(denoiser, self.objective),
                                                                 self._make_optimizer)
        self.denoiser = acc.unwrap_model(self.step_module).denoiser
        self.ema = EMA(self.denoiser, t.ema_decay, t.ema_halflife_steps, t.ema_warmup, t.ema_rampup_ratio) if (
            t.ema_decay is not None or t.ema_halflife_steps is not None) else None
        self.lr_scheduler = make_lr_scheduler(getattr(self.optimizer, "optimizer", self.optimizer),
                                              cfg.optim.warmup_steps, t.steps, cfg.optim.lr_schedule)
        self.start = 0
        self.stats = {"nonfinite_skipped": 0, "fp16_overflow_skipped": 0, "skipped_examples": 0, "skipped_files": []}
        if candidates:
            _, extra = resume_from(cfg, self.run_dir, candidates, self._load, announce=acc.is_main_process)
            self.start, self.stats = int(extra["step"]), {**self.stats, **extra["stats"]}
        if acc.is_main_process:
            save_resolved(cfg, self.run_dir / "config.toml")
        self.log = RunLog(self.run_dir, acc.is_main_process)
        self.share, self.batches = make_loader(train_set, cfg, self.start, acc.process_index, acc.num_processes)
        self.in_row, self.last_loss, self.window, self.tick = 0, float("nan"), [], time.perf_counter()

    def _make_optimizer(self, parameters) -> torch.optim.Optimizer:
        o = self.cfg.optim
        return torch.optim.AdamW(parameters, o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)

    # ------------------------------------------------------------------ state

    def _parts(self) -> dict:
        """The run's state as whole state dicts (under FSDP every process must call this: it gathers)."""
        return {
            "model": self.sharding.model_state(self.denoiser),
            "ema": self.ema.state_dict(keep=self.acc.is_main_process) if self.ema is not None else None,
            "optimizer": self.sharding.optimizer_state(self.denoiser, self.optimizer),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.acc.scaler.state_dict() if self.acc.scaler is not None else None,
        }

    def _load(self, ckpt: Path) -> dict:
        """Restore a checkpoint into this run (every process reads the files itself)."""
        model = _Loader(lambda s: self.sharding.load_model_state(self.denoiser, s))
        optimizer = _Loader(lambda s: self.sharding.load_optimizer_state(self.denoiser, self.optimizer, s))
        return load_checkpoint(ckpt, model=model, ema=self.ema, optimizer=optimizer, lr_scheduler=self.lr_scheduler,
                               scaler=self.acc.scaler)

    def checkpoint(self, done: int) -> Path | None:
        """Write the checkpoint of step ``done`` (main process) and wait for every process."""
        parts, saved = self._parts(), None
        if self.acc.is_main_process:
            last = latest_checkpoint(self.run_dir)
            after = f"the last complete checkpoint is {last.name}" if last else "no checkpoint has been written yet"
            with writing(f"saving step {done}", self.run_dir, after):
                saved = save_checkpoint(self.run_dir, done, **parts, extra_state={"step": done, "stats": self.stats},
                                        config=config_to_dict(self.cfg), keep_last=self.cfg.train.keep_last)
        self.acc.wait_for_everyone()
        return saved

    def sampling_model(self) -> nn.Module | None:
        """An unsharded module with the weights to sample with (EMA if kept) on the main process, else None.
        Under FSDP every process must call this: it gathers."""
        keep = self.sample_module is not None
        state = self.ema.full_state(keep) if self.ema is not None else self.sharding.model_state(self.denoiser)
        if keep:
            self.sample_module.load_state_dict(state)
        return self.sample_module

    # ------------------------------------------------------------------ the step

    def _batch(self, step: int, micro: int) -> tuple[torch.Tensor, dict]:
        """This rank's share of the step's micro-batch on the device, transformed; skipped files are counted."""
        batch = next(self.batches)
        if "class_labels" in self.null_cond:
            check_class_labels(batch["cond"], self.null_cond, f"model {self.cfg.model.name!r} "
                                                              f"(model.options.num_classes)")
        skipped = batch.get(SKIPPED, [])
        if skipped:
            self.stats["skipped_examples"] += len(skipped)
            names = self.stats["skipped_files"]
            names.extend(n for n in dict.fromkeys(skipped) if n not in names)
            del names[MAX_SKIPPED_NAMES:]
        batch = {"x": batch["x"].to(self.acc.device), "cond": {k: v.to(self.acc.device) for k, v in batch["cond"].items()}}
        if self.transforms:
            rows = range(self.share.start, self.share.stop)  # global rows: the draws do not depend on the rank
            batch = apply_transforms(batch, self.transforms, example_generators((self.cfg.train.seed, step, micro), rows))
        return batch["x"], batch["cond"]

    def accumulate_gradients(self, step: int) -> torch.Tensor:
        """Forward and backward over the step's micro-batches; returns the mean loss over all processes.
        Noise (and condition dropout) is drawn for the global batch and sliced to this rank's rows."""
        t, acc, B = self.cfg.train, self.acc, self.cfg.data.batch_size
        total = torch.zeros((), device=acc.device)
        for micro in range(t.grad_accum):
            x0, cond = self._batch(step, micro)
            g = torch.Generator().manual_seed(_step_seed(t.seed, step, micro))
            proto = x0.new_empty((B, *x0.shape[1:]), device="cpu")  # the global batch's shape
            draws = {k: v[self.share].to(acc.device) for k, v in self.objective.draw(proto, g).items()}
            if t.cond_drop_prob > 0 and cond:
                keep = torch.rand(B, generator=g)[self.share].to(acc.device) >= t.cond_drop_prob
                cond = select_conditions(cond, self.null_cond, keep)
            with self.sharding.no_sync(self.step_module, micro == t.grad_accum - 1), acc.autocast():
                loss = self.step_module(x0, draws, cond).mean() / t.grad_accum
                acc.backward(loss)
            total += loss.detach()
        return acc.reduce(total, "mean")

    def update(self, step: int, total: torch.Tensor) -> None:
        """Clip and apply the gradients, or skip a non-finite step (counted; too many in a row stop the run)."""
        t, clip = self.cfg.train, self.cfg.optim.grad_clip
        finite = bool(torch.isfinite(total))
        if finite and clip is not None:
            norm = self.sharding.clip(self.step_module.parameters(), clip)
            finite = t.mixed_precision == "fp16" or bool(torch.isfinite(norm))  # fp16: the scaler skips
        if finite:
            self.optimizer.step()
            if getattr(self.optimizer, "step_was_skipped", False):  # fp16 loss scaling found inf gradients
                self.stats["fp16_overflow_skipped"] += 1
            elif self.ema is not None:
                self.ema.update(self.denoiser)
            self.in_row, self.last_loss = 0, float(total)
            self.window.append(self.last_loss)
        else:
            self.in_row += 1
            self.stats["nonfinite_skipped"] += 1
            if self.in_row >= t.max_nonfinite_in_row:
                last = latest_checkpoint(self.run_dir)
                raise TrainingStopped(
                    f"step {step + 1}: the loss or its gradient was not finite {self.in_row} times in a row, so the "
                    f"run stopped; try a lower optim.lr, optim.grad_clip, train.mixed_precision='bf16' instead of "
                    f"'fp16', or check the data. Newest complete checkpoint: {last or 'none yet'} (every checkpoint "
                    f"holds finite weights: non-finite ones are never saved)"
                )
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a skipped first step is not the ordering mistake torch warns about
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            self.lr_scheduler.step()

    def step(self, step: int) -> None:
        """One optimizer step; running out of memory is the user's batch size, said in one line."""
        try:
            self.update(step, self.accumulate_gradients(step))
        except Exception as err:
            if not is_allocation_failure(err):
                raise
            raise UserError(f"out of memory at step {step + 1} with data.batch_size = {self.cfg.data.batch_size}: "
                            f"lower it (train.grad_accum keeps the batch per optimizer step) or the model's size "
                            f"({str(err).splitlines()[0][:120]})") from None

    # ------------------------------------------------------------------ periodic work

    def _prepare_val_batch(self, batch: dict, b: int) -> tuple[torch.Tensor, dict]:
        x0 = batch["x"].to(self.acc.device)
        cond = {k: v.to(self.acc.device) for k, v in batch["cond"].items()}
        if self.transforms:
            out = apply_transforms({"x": x0, "cond": cond}, self.transforms,
                                   example_generators((self.cfg.train.seed, -1, b), range(len(x0))))
            x0, cond = out["x"], out["cond"]
        return x0, cond

    def periodic(self, done: int, last: bool, bar) -> None:
        """Logs, validation loss and sample files when they fall due after step ``done``."""
        t, acc = self.cfg.train, self.acc
        if done % t.log_every == 0 or last:
            if self.window:
                rate = len(self.window) / max(time.perf_counter() - self.tick, 1e-9)
                self.log.scalars(done, {
                    "train/loss": sum(self.window) / len(self.window), "train/lr": self.lr_scheduler.get_last_lr()[0],
                    "train/steps_per_s": rate, "train/nonfinite_skipped": self.stats["nonfinite_skipped"]})
            bar.set_postfix(loss=f"{self.last_loss:.4f}", refresh=False)
            self.window, self.tick = [], time.perf_counter()
        classifier = self.cfg.objective.task == "classify"
        if t.val_every and done % t.val_every == 0 and len(self.val_set):
            value = validation_loss(self.denoiser, self.val_set, self.cfg, acc.device, acc.process_index,
                                    acc.num_processes, lambda s: acc.reduce(s, "sum"), self._prepare_val_batch,
                                    classified if classifier else edm_error)
            self.log.scalars(done, {"val/accuracy" if classifier else "val/loss": value})
        if t.sample_every and done % t.sample_every == 0 and not classifier:  # a classifier draws no samples
            model = self.sampling_model()
            if model is not None:
                media = sample_media(model, self.schedule, self.cfg, self.example_shape, self.val_set,
                                     self._prepare_val_batch)
                if media is not None:  # None: a conditioned model with no validation examples to condition on
                    with writing(f"writing samples after step {done}", self.run_dir):
                        self.log.media("samples", done, media, self.run_dir / "samples" / f"step_{done:06d}")

    def finish(self) -> Path | None:
        """The model folder (EMA weights) and the loss curve, from the main process."""
        model, model_dir = self.sampling_model(), None
        if model is not None:
            with writing("writing the model folder", self.run_dir):
                model_dir = DiffusionModel.build(self.cfg, self.example_shape, model, self.schedule).save_pretrained(
                    self.run_dir / "model")
                if self.log.path.exists():
                    plot_loss_curve(self.log.path, self.run_dir / "loss_curve.png")
        return model_dir

    def stop_requested(self, requested: bool) -> bool:
        """Whether any process was asked to stop (Ctrl-C, SIGTERM): all processes agree, so they stop after the
        same step and write one checkpoint together."""
        if self.acc.num_processes == 1:
            return requested
        flag = torch.tensor([float(requested)], device=self.acc.device)
        return bool(self.acc.reduce(flag, "sum") > 0)

    def close(self) -> None:
        if self.batches is not None:
            self.batches.close()
        if self.log is not None:
            self.log.close()
        if self.lock is not None:
            self.lock.release()


def _first_example(dataset) -> dict:
    return next(iter(dataset)) if isinstance(dataset, IterableDataset) else dataset[0]


def train(cfg: RecipeConfig, *, resume: bool = False, stop_at: int | None = None, progress: bool = True) -> RunResult:
    """Train ``cfg``; with ``resume`` continue its run folder's newest loadable checkpoint exactly. ``stop_at``
    ends the run after that step as if it were interrupted (to test resume). Ctrl-C or SIGTERM finishes the
    step on every process, writes a checkpoint and raises ``Interrupted``. The operating system refusing a
    write or a read (a full disk, a vanished folder) ends the run with a one-line ``UserError``."""
    run = None
    try:
        run = _Run(cfg, resume, progress)
        return _loop(run, cfg, stop_at)
    except OSError as err:
        where = run.run_dir if run is not None else Path(cfg.train.out_dir)
        last = latest_checkpoint(where) if run is not None else None
        after = f"the last complete checkpoint is {last.name}" if last else ""
        raise UserError(os_error_message(err, where, f"training {cfg.name!r}", after)) from None
    except RuntimeError as err:
        if not str(err).startswith("DataLoader worker"):
            raise
        raise UserError(f"a data-loader worker died ({' '.join(str(err).split())[:160]}), often for lack of memory: "
                        f"lower data.num_workers or data.batch_size") from None
    finally:
        if run is not None:
            run.close()


def _loop(run: _Run, cfg: RecipeConfig, stop_at: int | None) -> RunResult:
    t = cfg.train
    end = t.steps if stop_at is None else min(t.steps, stop_at)
    if run.start > end or (stop_at is not None and run.start >= end):
        limit = f"--stop-at {stop_at}" if stop_at is not None and stop_at < t.steps else f"train.steps = {t.steps}"
        raise UserError(f"{run.run_dir} is already at step {run.start}, past {limit}: raise it to train further")
    bar = tqdm(range(run.start, end), initial=run.start, total=t.steps, desc=f"train {cfg.name}", unit="step",
               disable=not (run.progress and run.acc.is_main_process), dynamic_ncols=True)
    started = time.perf_counter()
    with DeferredInterrupt() as interrupt:
        for step in bar:
            run.step(step)
            done = step + 1
            run.periodic(done, done == end, bar)
            stop = run.stop_requested(interrupt.requested)
            if done % t.checkpoint_every == 0 or done == end or stop:
                saved = run.checkpoint(done)
            if stop:
                raise Interrupted(f"after step {done}, checkpoint {saved}", interrupt.signum or signal.SIGTERM)
    bar.close()
    rate = (end - run.start) / max(time.perf_counter() - started, 1e-9)
    model_dir = run.finish() if end == t.steps else None
    s = run.stats
    return RunResult(run.run_dir, end, run.last_loss, s["nonfinite_skipped"], model_dir, rate,
                     s["skipped_examples"], list(s["skipped_files"]), s["fp16_overflow_skipped"],
                     run.acc.is_main_process)
