"""A normal (non-editable) install works: build the wheel from the checkout's files, install it into a
throwaway virtual environment, and run ``polydiff info``, a tiny train and a sample from it, far from the
checkout so that nothing can be imported from the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _clean_clone(dest: Path) -> Path:
    """The files a fresh clone would have (tracked, plus new files git does not ignore)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the wheel is built from a clone's files")
    for name in listed.stdout.splitlines():
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def test_the_built_wheel_installs_and_trains_and_samples(tmp_path):
    clone = _clean_clone(tmp_path / "clone")
    expected = {f"polydiff/{p.parent.relative_to(clone)}".rstrip("/.") for p in clone.rglob("__init__.py")
                if "tests" not in p.relative_to(clone).parts}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ".", "-w",
          str(tmp_path / "dist")], cwd=clone)
    wheel = next((tmp_path / "dist").glob("polydiff-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(Path(n).parent) for n in names if n.endswith("/__init__.py")}
    assert expected <= packages, sorted(expected - packages)
    assert "polydiff/recipes/toy/swiss_roll.toml" in names and "polydiff/recipes/README.md" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    site = Path(_run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).strip())
    # Dependencies come from the test's own environment; polydiff itself only from the wheel.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "-q",
          str(wheel)], cwd=tmp_path)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([str(venv / "bin" / "python"), "-c", "import polydiff; print(polydiff.__file__)"], cwd=work)
    assert Path(where.strip()).is_relative_to(venv), where
    polydiff = str(venv / "bin" / "polydiff")
    info = _run([polydiff, "info"], cwd=work)
    assert "modalities" in info and "toy" in info and "heun" in info
    sets = ["train.steps=4", "data.batch_size=16", "data.options.num_samples=200", "model.options.hidden=16",
            "train.sample_every=0", "train.val_every=0", 'train.out_dir="runs"']
    _run([polydiff, "train", "toy/swiss_roll", *[a for s in sets for a in ("--set", s)]], cwd=work)
    _run([polydiff, "sample", "runs/swiss_roll/model", "--num", "8", "--steps", "2", "--out", "drawn"], cwd=work)
    assert (work / "drawn" / "samples.png").is_file()
