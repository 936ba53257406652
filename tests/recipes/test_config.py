"""Recipe configs: typed loading, one-line errors naming the key path, --set overrides, round trips,
agreement with the core registries, and a README that documents every key."""

import dataclasses
import inspect
import json
import re
import typing
from pathlib import Path

import pytest

from polydiff.recipes.config import ConfigError, config_from_dict, config_to_dict
from polydiff.recipes.files import load_recipe, save_resolved, to_json, to_toml
from polydiff.recipes.reference import field_paths, markdown_reference
from polydiff import registry
from polydiff.data.swiss_roll import SwissRollOptions
from polydiff.modalities.toy.mlp import MLPOptions
from polydiff.recipes.schema import (
    BEGIN,
    END,
    README,
    DataConfig,
    DiffusionConfig,
    OptimConfig,
    RecipeConfig,
    SampleConfig,
    TrainConfig,
)

TOY = Path(__file__).parents[2] / "recipes" / "toy" / "swiss_roll.toml"
DATA_SETS = ", ".join(f'"{name}"' for name in registry.names("data"))  # what the error lists, read from the registry
MODALITIES = ", ".join(f'"{name}"' for name in registry.names("writer"))  # a modality is a registered writer


@pytest.fixture(autouse=True)
def heun_registered(monkeypatch):
    """The toy recipe samples with 'heun': a stand-in until core.samplers registers the real one."""
    from polydiff.core.samplers import SAMPLERS

    if "heun" not in SAMPLERS:
        monkeypatch.setitem(SAMPLERS, "heun", lambda denoiser, x, sigmas, **kwargs: x)


def toy_with(tmp_path, old, new):
    """The toy recipe with one piece of text replaced, written to tmp_path/x.toml."""
    text = TOY.read_text()
    assert old in text
    path = tmp_path / "x.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def fails(path, overrides=()):
    """The one-line message of the ConfigError that loading raises."""
    with pytest.raises(ConfigError) as info:
        load_recipe(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_toy_recipe_loads_typed_and_frozen():
    cfg = load_recipe(TOY)
    assert (cfg.name, cfg.modality, cfg.data.name, cfg.model.name) == ("swiss_roll", "toy", "swiss_roll", "mlp")
    assert cfg.data.options == SwissRollOptions(num_samples=20000, noise=0.05)
    assert cfg.model.options == MLPOptions(hidden=128, depth=3, embed_dim=64)
    assert cfg.optim.betas == (0.9, 0.999) and isinstance(cfg.optim.betas, tuple)
    assert cfg.train.ema_decay is None and cfg.train.ema_halflife_steps == 500.0
    assert cfg.sample == SampleConfig(sampler="heun", steps=18, spacing="karras", num=2000, seed=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 1.0
    assert hash(cfg) == hash(load_recipe(TOY))


# ---------------------------------------------------------------------------------------------------
# One-line errors from the file


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("lr = 1e-3", "lrr = 1e-3", "unknown key 'optim.lrr'; did you mean 'optim.lr'?"),
        ("[optim]", "[optimizer]", "unknown key 'optimizer'; did you mean 'optim'?"),
        ("noise = 0.05", "nosie = 0.05", "unknown key 'data.options.nosie'; did you mean 'data.options.noise'? (the "
         "options of 'data.name' = \"swiss_roll\")"),
        ("lr = 1e-3", "zzz = 1", "unknown key 'optim.zzz'; allowed: lr, betas, weight_decay, eps, warmup_steps, "
         "lr_schedule, grad_clip"),
        ("steps = 5000", 'steps = "ten"', "'train.steps' must be an integer, got \"ten\""),
        ("steps = 5000", "steps = true", "'train.steps' must be an integer, got true"),
        ("steps = 5000", "steps = 2.5", "'train.steps' must be an integer, got 2.5"),
        ("lr = 1e-3", "lr = true", "'optim.lr' must be a number, got true"),
        ("lr = 1e-3", 'lr = "fast"', "'optim.lr' must be a number, got \"fast\""),
        ("lr = 1e-3", "lr = -1", "'optim.lr' must be > 0, got -1"),
        ("val_fraction = 0.05", "val_fraction = 0.7", "'data.val_fraction' must be <= 0.5, got 0.7"),
        ("grad_clip = 1.0", "grad_clip = 0", "'optim.grad_clip' must be > 0, got 0"),
        ("grad_clip = 1.0", 'grad_clip = "x"', "'optim.grad_clip' must be a number or \"none\", got \"x\""),
        ("lr = 1e-3", "betas = [0.9, 1.0]", "'optim.betas[1]' must be < 1, got 1.0"),
        ("lr = 1e-3", "betas = [0.9]", "'optim.betas' must be a list of 2 numbers, got [0.9]"),
        ("lr = 1e-3", 'betas = [0.9, "a"]', "'optim.betas[1]' must be a number, got \"a\""),
        ("steps = 5000", 'mixed_precision = "fp8"', "'train.mixed_precision' must be one of \"no\", \"bf16\", "
         "\"fp16\", got \"fp8\""),
        ('spacing = "karras"', 'spacing = "karas"', "'sample.spacing' must be one of \"karras\", \"leading\", "
         "\"linspace\", \"logsnr\", \"trailing\", \"warped_logsnr\", got \"karas\"; did you mean \"karras\"?"),
        ('[data]\nname = "swiss_roll"', '[data]\nname = "swiss"', f"'data.name' must be one of {DATA_SETS}, "
         "got \"swiss\"; did you mean \"swiss_roll\"?"),
        ('modality = "toy"', 'modality = "imaging"', f"'modality' must be one of {MODALITIES}, got \"imaging\"; did "
         "you mean \"image\"?"),
        ("lr = 1e-3", "lr = nan", "'optim.lr' must be a finite number, got nan"),
        ("lr = 1e-3", "lr = inf", "'optim.lr' must be a finite number, got inf"),
        ("p_mean = -1.2", "p_mean = nan", "'objective.noise_levels.options.p_mean' must be a finite number, got nan"),
        ("seed = 0", "seed = 4294967296", "'sample.seed' must be <= 4294967295, got 4294967296"),
        ("steps = 5000", "steps = 9223372036854775808", "'train.steps' must fit in 64 bits, got 9223372036854775808"),
        ("range = [-2.0, 2.0]", "range = [2.0, -2.0]", "'data.range' must be [lo, hi] with lo < hi, got [2.0, -2.0]"),
        ('out_dir = "runs"', 'out_dir = ""', "'train.out_dir' must name a directory, got an empty string"),
        ('name = "swiss_roll"\nmodality', 'name = "../x"\nmodality', "'name' names the run folder: it must be a "
         "plain folder name, got \"../x\""),
        ('name = "swiss_roll"\nmodality', "modality", "missing required key 'name'"),
        ('[data]\nname = "swiss_roll"\n', "[data]\n", "missing required key 'data.name'"),
        ("embed_dim = 64", "embed_dim = 63", "'model.options.embed_dim' must be even (cos and sin halves), got 63"),
        ("ema_halflife_steps = 500", "ema_halflife_steps = 500\nema_decay = 0.99",
         "'train.ema_halflife_steps' and 'train.ema_decay' are both set; set only one"),
    ],
)  # fmt: skip
def test_file_errors_are_one_line_naming_file_and_key(tmp_path, old, new, message):
    path = toy_with(tmp_path, old, new)
    assert fails(path) == f"{path}: {message}"


def test_a_section_that_is_not_a_table(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('name = "x"\nmodality = "toy"\noptim = 3\n[data]\nname = "swiss_roll"\n[model]\nname = "mlp"\n')
    assert fails(path) == f"{path}: 'optim' must be a table, got 3"
    path.write_text('name = "x"\nmodality = "toy"\n[data]\nname = "swiss_roll"\n')
    assert fails(path) == f"{path}: missing required key 'model'"


def test_unreadable_and_malformed_files(tmp_path):
    missing = tmp_path / "nope.toml"
    assert fails(missing).startswith(f"{missing}: cannot read the file")
    path = toy_with(tmp_path, "lr = 1e-3", "lr = = 1")
    assert re.fullmatch(re.escape(f"{path}: invalid TOML: ") + r".*line \d+.*", fails(path))


# ---------------------------------------------------------------------------------------------------
# Cross-field rules


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.ema_decay=0.999"], "'train.ema_halflife_steps' and 'train.ema_decay' are both set; set only one"),
        (["diffusion.c_noise=discrete"], "'diffusion.c_noise' = \"discrete\" needs a discrete schedule (cosine, "
         "linear, scaled_linear, sigmoid); 'diffusion.schedule' is \"edm\""),
        (["sample.spacing=trailing"], "'sample.spacing' = \"trailing\" needs a discrete schedule (cosine, "
         "linear, scaled_linear, sigmoid); 'diffusion.schedule' is \"edm\""),
        (["objective.noise_levels={name = \"wavegrad\"}"], "'objective.noise_levels.name' = \"wavegrad\" needs a discrete "
         "schedule (cosine, linear, scaled_linear, sigmoid); 'diffusion.schedule' is \"edm\""),
        (["train.fsdp=true", "train.mixed_precision=fp16"], "'train.mixed_precision' = \"fp16\" is not supported "
         "with 'train.fsdp' (its loss scaler needs whole gradients); use \"bf16\""),
        (["diffusion.schedule=cosine", "diffusion.learned_variance=true"], "'objective.hybrid_vlb_weight' is 0.0: it "
         "must be > 0 exactly when 'diffusion.learned_variance' is true (only L_vlb trains the variance, Nichol & "
         "Dhariwal 2021)"),
        (["diffusion.schedule=linear", "diffusion.zero_terminal_snr=true"], "'diffusion.parameterization' must be "
         "\"v\" or \"x0\" with 'diffusion.zero_terminal_snr' (eps is undefined at SNR 0; Lin et al. 2023, sec. 3.2), "
         "got \"edm\""),
        (["diffusion.beta_range=[1e-6, 0.01]"], "'diffusion.beta_range' sets the betas of a \"linear\" or "
         "\"scaled_linear\" schedule; 'diffusion.schedule' is \"edm\""),
        (["diffusion.schedule=cosine", "diffusion.beta_range=[1e-6, 0.01]"], "'diffusion.beta_range' sets the betas "
         "of a \"linear\" or \"scaled_linear\" schedule; 'diffusion.schedule' is \"cosine\""),
        (["diffusion.schedule=linear", "diffusion.beta_range=[0.01, 1e-6]"], "'diffusion.beta_range' must be "
         "[start, end] with start <= end, got [0.01, 1e-06]"),
        (["diffusion.schedule=linear", "diffusion.beta_range=[1e-6, 1.0]"], "'diffusion.beta_range[1]' must be < 1, "
         "got 1.0"),
        (["sample.betas=[1e-4, 0.01, 0.2]"], "'sample.steps' must be 3, the number of 'sample.betas', when they are "
         "given (they are the grid), got 18"),
        (["sample.betas=[1e-4, 0.0]"], "'sample.betas[1]' must be > 0, got 0.0"),
        (["objective.task=classify", "objective.loss=l1"], "'objective.loss' = \"l1\" scores a denoiser; "
         "'objective.task' = \"classify\" trains with cross-entropy (leave 'objective.loss' at \"l2\")"),
        (["objective.loss=l3"], "'objective.loss' must be one of \"l2\", \"l1\", got \"l3\""),
    ],
)  # fmt: skip
def test_cross_field_rules_blame_the_override_involved(overrides, message):
    assert fails(TOY, overrides) == f"--set {overrides[-1]}: {message}"


def test_the_wavegrad_keys_load_and_a_config_saved_before_them_takes_their_defaults():
    sets = ["diffusion.schedule=linear", "diffusion.beta_range=[1e-6, 0.01]", "objective.loss=l1", "sample.steps=6",
            "sample.betas=[7e-6, 1.4e-4, 2.1e-3, 2.8e-2, 3.5e-1, 7e-1]"]
    cfg = load_recipe(TOY, sets)
    assert cfg.diffusion.beta_range == (1e-6, 0.01) and cfg.objective.loss == "l1" and len(cfg.sample.betas) == 6
    data = config_to_dict(load_recipe(TOY))
    for section, key in (("diffusion", "beta_range"), ("objective", "loss"), ("sample", "betas")):
        del data[section][key]  # a run or model folder written before the keys existed
    old = config_from_dict(RecipeConfig, data, source="old/config.json")
    assert old == load_recipe(TOY) and old.diffusion.beta_range is None
    assert old.objective.loss == "l2" and old.sample.betas == ()


def test_a_consistent_discrete_recipe_loads():
    sets = ["diffusion.schedule=cosine", "diffusion.c_noise=discrete", "diffusion.parameterization=v",
            "diffusion.zero_terminal_snr=true", "diffusion.learned_variance=true", "objective.hybrid_vlb_weight=0.001",
            "objective.noise_levels={name = \"discrete\"}", "objective.weighting.name=min_snr", "sample.spacing=trailing"]  # fmt: skip
    cfg = load_recipe(TOY, sets)
    assert (cfg.diffusion.schedule, cfg.sample.spacing, cfg.objective.hybrid_vlb_weight) == ("cosine", "trailing", 1e-3)


# ---------------------------------------------------------------------------------------------------
# --set overrides


def test_overrides_are_typed_nested_and_applied_in_order():
    cfg = load_recipe(
        TOY,
        ["optim.lr=3e-4", 'train.mixed_precision="bf16"', "sample.sampler=heun", "optim.betas=[0.8, 0.95]",
         "data.options.noise=0.2", "optim.grad_clip=none", "train.steps=1e4", "optim.weight_decay=1",
         "train.out_dir=runs/a b", "sample.num=7", "sample.num=9"],
    )  # fmt: skip
    assert cfg.optim.lr == 3e-4 and cfg.train.mixed_precision == "bf16" and cfg.sample.sampler == "heun"
    assert cfg.optim.betas == (0.8, 0.95) and cfg.data.options.noise == 0.2 and cfg.optim.grad_clip is None
    assert cfg.train.steps == 10_000 and type(cfg.train.steps) is int
    assert cfg.optim.weight_decay == 1.0 and type(cfg.optim.weight_decay) is float
    assert cfg.train.out_dir == "runs/a b" and cfg.sample.num == 9


def test_override_table_replaces_and_creates(tmp_path):
    cfg = load_recipe(TOY, ["data.options={noise = 0.3}"])
    assert cfg.data.options == SwissRollOptions(noise=0.3)  # num_samples back to its default
    path = toy_with(tmp_path, 'name = "swiss_roll"\nmodality', "modality")
    cfg = load_recipe(path, ["name=mine", 'objective.weighting={name = "min_snr", options = {gamma = 2}}'])
    assert cfg.name == "mine" and cfg.objective.weighting.options.gamma == 2.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=3e-4", "unknown key 'optim.lrr'; did you mean 'optim.lr'?"),
        ("train.steps=ten", "'train.steps' must be an integer, got \"ten\""),
        ("optim.lr=-1", "'optim.lr' must be > 0, got -1"),
        ("diffusion.zero_terminal_snr=1", "'diffusion.zero_terminal_snr' must be true or false, got 1"),
        ("optim=3", "'optim' must be a table, got 3"),
        ("optim.lr", "expected KEY=VALUE such as optim.lr=3e-4"),
        (".lr=1", "expected KEY=VALUE such as optim.lr=3e-4"),
        ("optim.lr.x=1", "'optim.lr' is 0.001, not a table"),
        ("data.name=moons", f"'data.name' must be one of {DATA_SETS}, got \"moons\""),
        ("objective.weighting.options.gamma=2", "unknown key 'objective.weighting.options.gamma'; this table takes "
         "no keys (the options of 'objective.weighting.name' = \"edm\")"),
        ("objective.noise_levels.name=discrete", "unknown key 'objective.noise_levels.options.p_mean'; this table "
         "takes no keys (the options of 'objective.noise_levels.name' = \"discrete\")"),
        ("train.seed=1e30", "'train.seed' must fit in 64 bits, got 1e+30"),
        ("train.seed=4294967296", "'train.seed' must be <= 4294967295, got 4294967296"),
    ],
)
def test_override_errors_name_the_override(override, message):
    assert fails(TOY, [override]) == f"--set {override}: {message}"


def test_unknown_sampler_lists_the_registry():
    message = fails(TOY, ["sample.sampler=nope"])
    assert message.startswith("--set sample.sampler=nope: 'sample.sampler' must be one of ") and '"heun"' in message


def test_file_errors_stay_with_the_file_despite_overrides(tmp_path):
    path = toy_with(tmp_path, "lr = 1e-3", "lrr = 1e-3")
    assert fails(path, ["train.steps=10"]).startswith(f"{path}: unknown key 'optim.lrr'")


# ---------------------------------------------------------------------------------------------------
# Round trips and construction in Python


def test_dict_round_trip_is_exact():
    cfg = load_recipe(TOY, ["optim.grad_clip=none", "optim.betas=[0.5, 0.25]", "train.cond_drop_prob=0.1"])
    data = config_to_dict(cfg)
    assert json.loads(json.dumps(data)) == data  # plain data, storable in a checkpoint
    again = config_from_dict(RecipeConfig, data, source="ckpt")
    assert again == cfg and config_to_dict(again) == data


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_saved_resolved_config_reloads_identically(tmp_path, suffix):
    cfg = load_recipe(TOY, ["optim.grad_clip=none", "train.ema_halflife_steps=none", "train.ema_decay=0.9"])
    path = save_resolved(cfg, tmp_path / f"config{suffix}")
    assert path.read_text() == (to_toml(cfg) if suffix == ".toml" else to_json(cfg))
    assert load_recipe(path) == cfg


def test_config_from_dict_names_its_source():
    data = config_to_dict(load_recipe(TOY))
    data["optim"]["lr"] = 0
    with pytest.raises(ConfigError) as info:
        config_from_dict(RecipeConfig, data, source="run/ckpt.pt:config")
    assert str(info.value) == "run/ckpt.pt:config: 'optim.lr' must be > 0, got 0"
    assert info.value.key == ("optim", "lr")


def test_python_construction_is_validated_and_normalized():
    with pytest.raises(ConfigError, match=r"^'lr' must be > 0, got -1$"):
        OptimConfig(lr=-1)
    optim = OptimConfig(lr=1, betas=[0.5, 0.6])
    assert type(optim.lr) is float and optim.betas == (0.5, 0.6)
    assert DataConfig(name="swiss_roll").options == SwissRollOptions()
    assert DataConfig(name="swiss_roll", options={"noise": 0.2}).options.noise == 0.2
    with pytest.raises(ConfigError, match=r"^'options' must be a table of options for data \"swiss_roll\""):
        DataConfig(name="swiss_roll", options=MLPOptions())
    with pytest.raises(ConfigError, match=r"^'c_noise' = \"discrete\" needs a discrete schedule"):
        DiffusionConfig(c_noise="discrete")


# ---------------------------------------------------------------------------------------------------
# Agreement with the core registries and the backbone


@pytest.mark.parametrize(
    "config, key, module, table",
    [
        (DiffusionConfig, "schedule", "schedules", "SCHEDULES"),
        (DiffusionConfig, "parameterization", "precond", "PARAMETERIZATIONS"),
        (DiffusionConfig, "c_noise", "precond", "C_NOISE"),
        (SampleConfig, "spacing", "grids", "GRIDS"),
        (SampleConfig, "sampler", "samplers", "SAMPLERS"),
    ],
)
def test_core_names_are_read_from_the_core_registries(monkeypatch, config, key, module, table):
    """No list in the schema is kept in step with the core: a name added to a core table is accepted at once."""
    import importlib

    registry = getattr(importlib.import_module(f"polydiff.core.{module}"), table)
    field = {f.name: f for f in dataclasses.fields(config)}[key]
    assert set(field.metadata["choices"]()) == set(registry)
    monkeypatch.setitem(registry, "brand_new", registry[next(iter(registry))])
    assert "brand_new" in field.metadata["choices"]()


def test_noise_levels_and_weightings_are_the_core_registries_with_generated_options():
    from polydiff import registry
    from polydiff.core.noise_levels import NOISE_LEVELS
    from polydiff.core.objectives import WEIGHTINGS

    assert registry.names("noise_levels") == sorted(NOISE_LEVELS)
    assert registry.names("weighting") == sorted(WEIGHTINGS)
    # options mirror the documented core fields (defaults and bounds included); engine-supplied ones are absent
    lognormal = registry.get("noise_levels", "lognormal").options
    assert config_to_dict(lognormal()) == {"p_mean": -1.2, "p_std": 1.2}
    with pytest.raises(ConfigError, match=r"'p_std' must be > 0, got 0"):
        lognormal(p_std=0)
    assert set(config_to_dict(registry.get("weighting", "soft_min_snr").options())) == {"gamma"}
    assert "schedule" not in config_to_dict(registry.get("noise_levels", "discrete").options())


def test_ema_settings_are_the_ema_arguments():
    from polydiff.train.ema import EMA

    ema_keys = {name.removeprefix("ema_") for name in config_to_dict(TrainConfig()) if name.startswith("ema_")}
    assert ema_keys == set(inspect.signature(EMA).parameters) - {"model"}


# ---------------------------------------------------------------------------------------------------
# Documentation


def test_readme_reference_is_generated_from_the_schema():
    text = README.read_text()
    block = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    fix = 'regenerate with: python -c "import polydiff.recipes.schema as s; s.write_readme()"'
    assert block == markdown_reference(RecipeConfig).strip(), fix
    missing = [path for path in field_paths(RecipeConfig) if f"`{path}`" not in block]
    assert not missing and len(field_paths(RecipeConfig)) > 50, missing


def test_every_bundled_recipe_is_in_the_readme_table():
    from polydiff.commands.train import bundled_recipes

    table = README.read_text().split("## ", 1)[0]
    missing = [name for name in bundled_recipes() if f"| `{name}.toml` |" not in table]
    assert not missing, f"add these recipes to the table at the top of recipes/README.md: {missing}"
