"""The supported LLaMA-Factory range is written once, and each per-release fact matches the code installed."""

import inspect
import re

import pytest

from conftest import REPO

pytestmark = pytest.mark.both_stacks


def test_pyproject_requires_the_range_the_patches_are_guarded_by():
    from lfkit.lf_versions import SUPPORTED

    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'"llamafactory{SUPPORTED}"' in pyproject
    assert re.search(r'^requires-python = ">=3.10"$', pyproject, re.M)


def test_the_torchrun_module_is_where_the_installed_llamafactory_starts_torchrun():
    import importlib

    from lfkit.lf_versions import torchrun_module

    module = importlib.import_module(torchrun_module())
    source = inspect.getsource(module)
    assert '"torchrun ' in source and "subprocess.run(" in source
    others = {"llamafactory.cli", "llamafactory.launcher"} - {torchrun_module()}
    for other in others:
        assert '"torchrun ' not in inspect.getsource(importlib.import_module(other))


def test_every_supported_launch_sets_expandable_segments_for_the_workers():
    import importlib

    from lfkit.lf_versions import torchrun_module

    # what rocm-expandable-segments mends, wherever the launch lives
    assert '"expandable_segments:True"' in inspect.getsource(importlib.import_module(torchrun_module()))


def test_the_baichuan2_template_fact_matches_the_installed_templates():
    import importlib.util

    from lfkit.lf_versions import has_baichuan2_template

    # read as text: importing it here would arm lfkit's own registration of the template
    source = open(importlib.util.find_spec("llamafactory.data.template").origin, encoding="utf-8").read()
    assert bool(re.search(r'name="baichuan2"', source)) == has_baichuan2_template()


def test_no_llamafactory_guard_is_narrower_than_the_supported_range():
    from lfkit.lf_versions import SUPPORTED
    from lfkit.plugin_manager import get_manager

    ranges = {s.patch.id: s.patch.requires.get("llamafactory") for s in get_manager().patches.states.values()}
    narrower = {pid: spec for pid, spec in ranges.items() if spec is not None and spec != SUPPORTED}
    assert not narrower


def test_the_newer_arguments_are_those_of_the_newest_stack_and_said_so_on_the_older_one():
    from lfkit.errors import UsageError
    from lfkit.lf_versions import NEWER_ARGUMENTS, torchrun_module
    from lfkit.recipes.lf_args import check_key, known_keys

    keys = known_keys("train")
    if torchrun_module() == "llamafactory.cli":  # LLaMA-Factory 0.9.3: none of them parses
        assert not NEWER_ARGUMENTS & keys.keys()
        with pytest.raises(UsageError) as refused:
            check_key("train", "use_dft_loss", "recipe x")
        assert str(refused.value).endswith(
            "'s train has no argument 'use_dft_loss'; LLaMA-Factory 0.9.5 with transformers 5.6 has it"
        )
    else:
        assert NEWER_ARGUMENTS <= keys.keys()


@pytest.mark.parametrize("simulate", ["", "dtk:gfx906", "rocm:gfx90a"])
def test_no_patch_is_skipped_as_outside_a_verified_range_on_this_stack(simulate):
    """On each stack CI tests (the DCU stack's LLaMA-Factory 0.9.3 and transformers 4.52.4 included), every
    declared patch either applies or says why there is nothing to fix: none is outside its tested range."""
    import json

    from conftest import BIN, clean_env, run

    env = clean_env(LFKIT_SIMULATE=simulate) if simulate else clean_env()
    result = run([BIN / "lfkit", "patches", "--json"], env=env)
    assert result.returncode == 0, result.stderr
    outside = {p["id"]: p["detail"] for p in json.loads(result.stdout) if "outside the verified range" in p["detail"]}
    assert not outside
