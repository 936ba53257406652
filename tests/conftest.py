"""Suite-wide test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests use small tensors: intra-op threads only add contention on a 2-core machine (several
    times slower under load). Subprocess tests set OMP_NUM_THREADS themselves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def float64():
    """Make float64 the default dtype for one test (request it with ``pytest.mark.usefixtures``)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)



@pytest.fixture
def straight_and_resumed(tmp_path):
    """``run(overrides, stop)``: train the toy recipe with ``overrides`` straight through into tmp_path/a, and
    stopped after step ``stop`` then resumed into tmp_path/b; returns the tensors of both final checkpoints and
    the two run results."""
    from pathlib import Path

    from safetensors.torch import load_file

    from polydiff.recipes.files import load_recipe
    from polydiff.train import latest_checkpoint
    from polydiff.train.trainer import train

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "toy" / "swiss_roll.toml"

    def run(overrides: list[str], stop: int):
        def cfg(out: str):
            return load_recipe(recipe, [*overrides, f'train.out_dir="{(tmp_path / out).as_posix()}"'])

        straight = train(cfg("a"), progress=False)
        train(cfg("b"), stop_at=stop, progress=False)
        resumed = train(cfg("b"), resume=True, progress=False)
        tensors = [load_file(latest_checkpoint(r.run_dir) / "tensors.safetensors") for r in (straight, resumed)]
        return (*tensors, straight, resumed)

    return run
