"""The polydiff command: user errors are one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from polydiff.cli import main

RECIPE = str(Path(__file__).resolve().parents[1] / "recipes" / "toy" / "swiss_roll.toml")


def run(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "no/such/recipe.toml"], "recipe 'no/such/recipe.toml' not found"),
        (["train", RECIPE, "--set", "optim.lrr=1e-3"], "did you mean 'optim.lr'"),
        (["train", RECIPE, "--set", "train.steps=ten"], "'train.steps' must be an integer"),
        (["train", RECIPE, "--set", "optim.lr=-1"], "'optim.lr' must be > 0"),
        (["train", RECIPE, "--bogus"], "unrecognized arguments: --bogus"),
        (["train", RECIPE, "--set", "model.options.dims=3"], "unknown key 'model.options.dims'"),
        (["sample", "no/such/dir"], "no/such/dir"),
        (["frobnicate"], "invalid choice"),
        (["sample", "some/model", "--steps", "0"], "expected a positive integer in 1 .. 2147483647, got 0"),
        (["sample", "some/model", "--num", "many"], "expected a positive integer, got 'many'"),
        (["sample", "some/model", "--guidance", "nan"], "expected a finite number >= 0"),
    ],
)
def test_user_errors_exit_2_with_one_line(capsys, argv, expected):
    code, err = run(capsys, *argv)
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_sample_refuses_foreign_folders_and_pickles(capsys, tmp_path):
    (tmp_path / "config.json").write_text('{"hello": 1}')
    code, err = run(capsys, "sample", str(tmp_path))
    assert code == 2 and "not a polydiff model folder" in err
    pickle_dir = tmp_path / "p"
    pickle_dir.mkdir()
    (pickle_dir / "model.ckpt").write_bytes(b"\x80\x04\x95")
    code, err = run(capsys, "sample", str(pickle_dir / "model.ckpt"))
    assert code == 2 and "pickle" in err


def test_info_lists_versions_and_samplers(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "heun" in out


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(Exception, match="not found"):
        main(["--debug", "train", "no/such/recipe.toml"])


def test_train_then_sample_from_the_command_line(capsys, tmp_path):
    sets = ["train.steps=6", "data.batch_size=16", "data.options.num_samples=200", "model.options.hidden=16",
            "model.options.depth=1", "train.sample_every=0", "train.val_every=0", f'train.out_dir="{tmp_path}"']
    assert main(["train", "toy/swiss_roll", *[a for s in sets for a in ("--set", s)]]) == 0
    model_dir = tmp_path / "swiss_roll" / "model"
    assert "polydiff sample" in capsys.readouterr().out
    out = tmp_path / "drawn"
    assert main(["sample", str(model_dir), "--num", "8", "--steps", "3", "--sampler", "euler", "--out", str(out)]) == 0
    assert (out / "samples.png").is_file()
    code, err = run(capsys, "sample", str(model_dir), "--sampler", "bogus")
    assert code == 2 and "unknown sampler 'bogus'" in err
    code, err = run(capsys, "sample", str(model_dir), "--label", "1")
    assert code == 2 and "not class-conditional" in err
    code, err = run(capsys, "train", "toy/swiss_roll", *[a for s in sets for a in ("--set", s)])
    assert code == 2 and "--resume" in err  # the run folder holds checkpoints: never overwritten silently


def test_demo_never_deletes_a_run_it_did_not_make(capsys, tmp_path):
    (tmp_path / "swiss_roll").mkdir()
    (tmp_path / "swiss_roll" / "precious.txt").write_text("mine")
    code, err = run(capsys, "demo", "--out", str(tmp_path), "--quick")
    assert code == 2 and "not a demo run" in err
    assert (tmp_path / "swiss_roll" / "precious.txt").read_text() == "mine"


def test_the_quick_demo_runs_every_part_and_writes_its_pictures(capsys, tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--quick"]) == 0
    out = capsys.readouterr().out
    assert "demo: toy wrote" in out and (tmp_path / "swiss_roll.png").is_file()
    code, err = run(capsys, "demo", "--only", "nope")
    assert code == 2 and "unknown demo part 'nope'; known: toy" in err
