"""Bad input through the command line, one class at a time: each is one line naming the file or key and what
was expected, exit code 2; a bug is said to be one, exit code 1, with the traceback under --debug."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from polydiff.cli import main

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "toy" / "swiss_roll.toml"
TINY = ["train.steps=2", "data.batch_size=16", "data.options.num_samples=100", "model.options.hidden=8",
        "model.options.depth=1", "train.sample_every=0", "train.val_every=0"]


def run(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    return code, capsys.readouterr().err


def one_line(code: int, err: str, expected: str, exit_code: int = 2) -> None:
    assert code == exit_code, err
    assert expected in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    sets = [*TINY, f'train.out_dir="{out.as_posix()}"']
    assert main(["train", "toy/swiss_roll", *[a for s in sets for a in ("--set", s)]]) == 0
    return out / "swiss_roll" / "model"


def copy_model(model_dir: Path, dest: Path) -> Path:
    dest.mkdir()
    for f in model_dir.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


# ---------------------------------------------------------------- recipe files


def test_a_recipe_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    one_line(*run(capsys, "train", str(path)), f"{path}: is not UTF-8 text")


def test_a_recipe_nested_absurdly_deep(tmp_path, capsys):
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    code, err = run(capsys, "train", str(path))
    one_line(code, err, f"{path}: invalid TOML")


def test_a_recipe_path_that_is_a_folder(tmp_path, capsys):
    one_line(*run(capsys, "train", str(tmp_path)), "is a folder, not a recipe file")


def test_non_finite_and_oversized_values(capsys):
    one_line(*run(capsys, "train", str(RECIPE), "--set", "optim.lr=inf"), "'optim.lr' must be a finite number, got inf")
    one_line(*run(capsys, "train", str(RECIPE), "--set", "objective.noise_levels.options.p_mean=nan"),
             "must be a finite number, got nan")
    one_line(*run(capsys, "train", str(RECIPE), "--set", f"train.seed={2**70}"), "'train.seed' must fit in 64 bits")
    one_line(*run(capsys, "sample", "m", "--seed", str(2**70)), "expected an integer seed in 0 .. 4294967295")


# ---------------------------------------------------------------- output paths


@pytest.mark.parametrize("out, phrase", [("", "--out must name a folder"), ("file/x", "which is a file"),
                                         ("file", "is a file, not a folder")])
def test_sample_output_paths_that_cannot_be_written(tmp_path, capsys, model_dir, out, phrase, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    one_line(*run(capsys, "sample", str(model_dir), "--out", out), phrase)


def test_sample_into_an_existing_folder_writes_there(tmp_path, capsys, model_dir):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["sample", str(model_dir), "--num", "4", "--steps", "2", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "keep.txt").read_text() == "mine"


def test_train_out_dir_below_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    sets = [*TINY, f'train.out_dir="{(tmp_path / "file" / "runs").as_posix()}"']
    one_line(*run(capsys, "train", str(RECIPE), *[a for s in sets for a in ("--set", s)]),
             "train.out_dir: ", 2)


# ---------------------------------------------------------------- model folders


@pytest.mark.parametrize(
    "section, key, value, phrase",
    [
        ("sampling", "steps", "ten", "config.json: 'sampling.steps' must be an integer, got \"ten\""),
        ("sampling", "sampler", ["heun"], "config.json: 'sampling.sampler' must be a string"),
        ("sampling", "sampler", "nope", "config.json: 'sampling.sampler' must be one of"),
        ("sampling", "guidance", -1, "config.json: 'sampling.guidance' must be >= 0"),
        ("config", "name", 5, "config.json: 'config.name' must be a string"),
        (None, "example_shape", [2, "x"], "'example_shape' must be a list of positive integers"),
        (None, "sampling", [], "'sampling' must be a JSON object, got list"),
    ],
)
def test_model_folders_with_wrong_types_name_config_json(tmp_path, capsys, model_dir, section, key, value, phrase):
    folder = copy_model(model_dir, tmp_path / "m")
    doc = json.loads((folder / "config.json").read_text())
    (doc[section] if section else doc)[key] = value
    (folder / "config.json").write_text(json.dumps(doc))
    one_line(*run(capsys, "sample", str(folder), "--out", str(tmp_path / "o")), phrase)


def test_nan_weights_are_refused_on_load(tmp_path, capsys, model_dir):
    folder = copy_model(model_dir, tmp_path / "m")
    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, folder / "model.safetensors")
    one_line(*run(capsys, "sample", str(folder), "--out", str(tmp_path / "o")),
             f"model.safetensors: refusing to load: model entry '{name}' has non-finite values")


def test_a_truncated_weights_file_is_called_truncated_not_a_pickle(tmp_path, capsys, model_dir):
    folder = copy_model(model_dir, tmp_path / "m")
    data = (folder / "model.safetensors").read_bytes()
    for cut in (1, 9, len(data) // 2, len(data) - 3):
        (folder / "model.safetensors").write_bytes(data[:cut])
        code, err = run(capsys, "sample", str(folder), "--out", str(tmp_path / "o"))
        one_line(code, err, "model.safetensors")
        assert "pickle" not in err, err


def test_empty_or_unknown_sampler(capsys, model_dir, tmp_path):
    one_line(*run(capsys, "sample", str(model_dir), "--sampler", ""), "expected a name, got an empty string")
    one_line(*run(capsys, "sample", str(model_dir), "--sampler", "bogus", "--out", str(tmp_path / "o")),
             "unknown sampler 'bogus'")
    assert not (tmp_path / "o").exists()  # nothing written for a failed run


def test_an_older_model_folder_format_says_so(tmp_path, capsys, model_dir):
    folder = copy_model(model_dir, tmp_path / "m")
    doc = json.loads((folder / "config.json").read_text())
    doc["polydiff_format"] = 1
    (folder / "config.json").write_text(json.dumps(doc))
    one_line(*run(capsys, "sample", str(folder)), "has polydiff_format 1, written before model folders stored")


# ---------------------------------------------------------------- the CLI itself


def test_argparse_hints_name_the_right_command(capsys):
    one_line(*run(capsys, "frobnicate"), "(see 'polydiff --help')")
    one_line(*run(capsys, "sample"), "(see 'polydiff sample --help')")


def test_a_bug_is_reported_as_a_bug(monkeypatch, capsys, tmp_path):
    from polydiff.commands import info

    def broken(path):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(info, "_model_lines", broken)
    one_line(*run(capsys, "info", "somewhere"), "internal error (a bug in polydiff or a plugin, please report it): "
             "TypeError: unsupported operand", exit_code=1)
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["--debug", "info", "somewhere"])


def test_a_value_error_inside_training_is_a_bug_not_a_user_error(monkeypatch, capsys, tmp_path):
    """Before, any ValueError while building a run became a one-line user error, hiding real bugs."""
    from polydiff.train import trainer

    def broken(cfg, schedule):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(trainer, "build_objective", broken)
    sets = [*TINY, f'train.out_dir="{tmp_path.as_posix()}"']
    one_line(*run(capsys, "train", str(RECIPE), *[a for s in sets for a in ("--set", s)]),
             "internal error (a bug", exit_code=1)


def test_more_hostile_values(capsys, tmp_path, model_dir):
    one_line(*run(capsys, "sample", str(model_dir), "--label", str(2**70)), "expected a class label in 0 ..")
    deep = "[" * 20000 + "]" * 20000
    one_line(*run(capsys, "train", str(RECIPE), "--set", f"data.options.noise={deep}"), "nested too deeply")
    one_line(*run(capsys, "demo", "--out", ""), "--out must name a folder, got an empty path")
    from polydiff.recipes.files import load_recipe

    assert load_recipe(RECIPE, ["optim.weight_decay=1e308"]).optim.weight_decay == 1e308  # large, but finite


def test_sampling_into_the_current_folder(capsys, tmp_path, model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sample", str(model_dir), "--num", "3", "--steps", "2", "--out", "."]) == 0
    assert (tmp_path / "samples.png").is_file()


def test_guidance_without_a_condition(tmp_path, capsys, model_dir):
    """A default guidance applies when there is a condition to guide towards; asked for explicitly without one, it
    is one line naming where it came from."""
    folder = copy_model(model_dir, tmp_path / "m")
    doc = json.loads((folder / "config.json").read_text())
    doc["sampling"]["guidance"] = 3.0
    (folder / "config.json").write_text(json.dumps(doc))
    assert main(["sample", str(folder), "--num", "2", "--steps", "2", "--out", str(tmp_path / "o")]) == 0
    one_line(*run(capsys, "sample", str(folder), "--guidance", "2", "--out", str(tmp_path / "o")),
             "guidance = 2: guidance other than 1 needs a conditional model and a condition")


def test_more_samples_than_memory_holds_is_said_before_sampling():
    from polydiff.commands.sample import check_room
    from polydiff.errors import UserError

    with pytest.raises(UserError, match=r"--num 5000: 5000 samples of shape \(2,\) need about 0.0 GiB, more than"):
        check_room(5000, (2,), free=10_000)
    check_room(5000, (2,), free=10**6)


def test_sampling_in_batches_gives_the_same_samples(tmp_path, model_dir):
    from polydiff.pipeline import Pipeline

    pipeline = Pipeline.from_pretrained(model_dir)
    whole = pipeline.sample(7, seed=3, steps=3)
    torch.testing.assert_close(pipeline.sample(7, seed=3, steps=3, batch_size=3), whole, rtol=0, atol=1e-6)
