"""Bad training configs are named, field by field, before anything is built."""

import pytest

from lasagna.config import ConfigError
from lasagna.train.config import check_train_config, load_train_config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=.nan", r"optim.lr must be a finite number >= 0.0, got nan"),
        ("optim.lr=.inf", r"optim.lr must be a finite number"),
        ("optim.lr=-0.001", r"optim.lr must be a finite number >= 0.0"),
        ("optim.grad_clip=0", r"optim.grad_clip must be a finite number > 0.0"),
        ("optim.steps=0", r"optim.steps must be an integer >= 1, got 0"),
        ("optim.batch_size=-2", r"optim.batch_size must be an integer >= 1"),
        ("optim.grad_accum=0", r"optim.grad_accum must be an integer >= 1"),
        ("optim.warmup_steps=-1", r"optim.warmup_steps must be an integer >= 0"),
        ("optim.betas=[0.9]", r"optim.betas must be two numbers"),
        ("optim.weight_decay=-1", r"optim.weight_decay must be a finite number >= 0.0"),
        ("optim.steps=4.5", r"config.optim.steps: expected int, got 4.5"),
        ("optim.steps=true", r"config.optim.steps: expected int, got True"),
        ("model_preset=[1, 2]", r"config.model_preset: expected str"),
        ("optim=[1, 2]", r"config.optim: expected a mapping for OptimConfig"),
        ("judges.presence_weight=-1", r"judges.presence_weight must be >= 0"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field(override, message):
    with pytest.raises(ValueError, match=message):
        load_train_config(None, [override])


@pytest.mark.parametrize("field", ["save_every", "keep_last", "log_every"])
def test_zero_intervals_are_refused_before_training(field):
    with pytest.raises(ValueError, match=f"{field} must be an integer >= 1, got 0"):
        check_train_config(load_train_config(None, [f"{field}=0"]))


def test_malformed_yaml_is_named_with_its_file_and_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 0.001\n  steps: [1, 2\nseed: 3\n")
    with pytest.raises(ValueError, match=r"run.yaml: not valid YAML at line \d+, column \d+"):
        load_train_config(path)
    with pytest.raises(ValueError, match=r"override 'optim.betas=\[0.9': the value is not valid YAML"):
        load_train_config(None, ["optim.betas=[0.9"])


def test_a_model_override_of_the_wrong_type_names_the_field():
    from lasagna.train.setup import model_config_of

    cfg = load_train_config(None, ["model_overrides={llm.hidden_size: big}"])
    with pytest.raises(ConfigError, match=r"config.llm.hidden_size: expected int, got 'big'"):
        model_config_of(cfg)
    with pytest.raises(TypeError):  # ConfigError is a TypeError too, for callers that catch that
        model_config_of(load_train_config(None, ["model_overrides={llm.num_hidden_layers: 4.5}"]))
