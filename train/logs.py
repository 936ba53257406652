"""Scalar logs of a run: a CSV file, TensorBoard, and a loss-curve PNG drawn from the CSV."""

from __future__ import annotations

import csv
from pathlib import Path

from ..media import Media, log_media, save_media


class RunLog:
    """Append-only scalar log (``scalars.csv``: step, name, value) mirrored to TensorBoard.

    Only the main process writes; on others every call is a no-op. Re-opening a resumed run appends.
    """

    def __init__(self, run_dir: Path, active: bool = True):
        self.active = active
        self.path = run_dir / "scalars.csv"
        self._tb = None
        if active:
            from torch.utils.tensorboard import SummaryWriter

            run_dir.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            self._file = open(self.path, "a", newline="")
            self._csv = csv.writer(self._file)
            if new:
                self._csv.writerow(["step", "name", "value"])
            self._tb = SummaryWriter(str(run_dir / "tensorboard"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.active:
            return
        for name, value in values.items():
            self._csv.writerow([step, name, f"{value:.7g}"])
            self._tb.add_scalar(name, value, step)
        self._file.flush()

    def media(self, tag: str, step: int, media: Media, stem: Path) -> Path | None:
        """Write ``media`` as ``stem`` + .png / .mp4 / .wav and mirror it into TensorBoard; returns the file."""
        if not self.active:
            return None
        path = save_media(media, stem)
        log_media(self._tb, tag, step, media)
        return path

    def close(self) -> None:
        if self.active:
            self._file.close()
            self._tb.close()


def read_scalars(path: Path) -> dict[str, tuple[list[int], list[float]]]:
    """name -> (steps, values) from a ``scalars.csv``; a resumed run's later rows win for repeated steps."""
    series: dict[str, dict[int, float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            series.setdefault(row["name"], {})[int(row["step"])] = float(row["value"])
    return {name: (sorted(s), [s[k] for k in sorted(s)]) for name, s in series.items()}


def plot_loss_curve(csv_path: Path, png_path: Path) -> Path:
    """Training and validation loss against step, log scale, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_scalars(csv_path)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("train/loss", "val/loss"):
        if name in series:
            ax.plot(*series[name], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
