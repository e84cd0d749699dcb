"""The recipe format and the type checks against LLaMA-Factory's dataclasses, in process."""

import pytest

from lfkit.errors import UsageError
from lfkit.recipes import lf_args
from lfkit.recipes.resolve import parse_assignments, resolve
from lfkit.recipes.spec import RecipeError, parse


def test_single_step_shorthand_and_steps_are_the_same_model():
    one = parse({"name": "x", "command": "train", "args": {"stage": "sft"}})
    assert [(s.name, s.command) for s in one.steps] == [("train", "train")] and one.single
    two = parse({"name": "y", "steps": [{"name": "a", "command": "train"}, {"name": "b", "command": "export"}]})
    assert [s.name for s in two.steps] == ["a", "b"] and not two.single


@pytest.mark.parametrize(
    "data, message",
    [
        ({"command": "train"}, "missing name"),
        ({"name": "x", "command": "fly"}, "command must be one of"),
        ({"name": "x", "command": "train", "steps": []}, "either command + args"),
        ({"name": "x", "steps": [{"command": "train"}, {"command": "export"}]}, "needs a name"),
        ({"name": "x", "command": "train", "params": {"model": {"requird": True}}}, "unknown field(s) requird"),
    ],
)
def test_malformed_recipes_are_refused_with_the_reason(data, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        parse(data, "r.yaml")


@pytest.mark.parametrize(
    "command, key, value, expected",
    [
        ("train", "learning_rate", "5e-5", 5e-5),  # YAML 1.1 would read this as text
        ("train", "num_train_epochs", "3", 3.0),
        ("train", "do_train", "false", False),
        ("train", "lr_scheduler_type", "cosine", "cosine"),  # an enum, kept as its value
        ("train", "report_to", "none", "none"),  # the word none is a value here, not null
        ("train", "lora_target", "q_proj,v_proj", "q_proj,v_proj"),
        ("chat", "seed", "7", 7),
        ("chat", "max_new_tokens", 24, 24),
    ],
)
def test_values_become_what_llamafactory_expects(command, key, value, expected):
    assert lf_args.coerce(command, key, value, "here") == expected


@pytest.mark.parametrize(
    "command, key, value, message",
    [
        ("train", "per_device_train_batch_size", "4.5", "is not a whole number"),
        ("train", "do_train", "maybe", "is not true or false"),
        ("train", "lr_scheduler_type", "cosin", "is not one of linear, cosine"),
        ("export", "learning_rate", "1", "export does not know the key 'learning_rate'"),
    ],
)
def test_wrong_values_and_keys_are_one_line(command, key, value, message):
    with pytest.raises(UsageError, match=message):
        lf_args.coerce(command, key, value, "here")


def test_an_unset_optional_parameter_drops_its_key(tmp_path, tiny_llama):
    recipe = parse(
        {
            "name": "c",
            "params": {"model": {"required": True}, "adapter": {}},
            "command": "chat",
            "args": {"model_name_or_path": "${model}", "adapter_name_or_path": "${adapter}"},
        }
    )
    plan = resolve(recipe, parse_assignments([f"model={tiny_llama}"]))
    args = plan.steps[0].args
    assert "adapter_name_or_path" not in args and args["model_name_or_path"] == str(tiny_llama)
    assert args["template"] == "llama2"  # the llama2 family's default, filled by the model plugin


LOAD_AND_SAY_IF_YAML_LOADED = """
import sys
from lfkit.recipes.spec import load
recipe = load({path!r})
print(recipe.name, sorted(recipe.steps[0].args.items()), "yaml loaded:", "yaml" in sys.modules)
"""


def test_a_recipe_file_is_parsed_once_per_content(tmp_path):
    """The parsed data is kept by the file's content: the same file again needs no YAML parser, an
    edited one is parsed again, and data JSON cannot give back (a date) is parsed every time."""
    from conftest import clean_env, py

    env = clean_env(LFKIT_HOME=str(tmp_path / "home"))
    path = tmp_path / "mine.yaml"

    def load_it(text: str) -> str:
        path.write_text(text, encoding="utf-8")
        result = py(LOAD_AND_SAY_IF_YAML_LOADED.format(path=str(path)), env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout.strip()

    text = "name: mine\ncommand: train\nargs: {stage: sft, learning_rate: 1.0e-4}\n"
    first, again = load_it(text), load_it(text)
    assert first.endswith("yaml loaded: True") and again.endswith("yaml loaded: False")
    assert first.rpartition(" yaml")[0] == again.rpartition(" yaml")[0]
    assert "('learning_rate', 0.0001)" in again
    edited = load_it(text.replace("1.0e-4", "2.0e-4"))
    assert "('learning_rate', 0.0002)" in edited and edited.endswith("yaml loaded: True")
    dated = "name: mine\ncommand: train\nargs: {stage: sft, run_name: 2024-01-01}\n"
    assert load_it(dated) == load_it(dated) and load_it(dated).endswith("yaml loaded: True")
