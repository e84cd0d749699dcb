"""Third-party plugins through the `lfkit` entry-point group, in fresh interpreters."""

import json
import os

import pytest

from conftest import BIN, clean_env, make_dist, py, run

LFKIT = BIN / "lfkit"


def _plugins(*sites, **env):
    result = run([LFKIT, "plugins", "--json"], env=clean_env(PYTHONPATH=os.pathsep.join(map(str, sites)), **env))
    return result


def _by_name(result):
    assert result.returncode == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


def test_builtins_are_plugins_too():
    plugins = _by_name(_plugins())
    assert plugins["lfkit.lifecycle"]["source"] == "built-in"
    assert plugins["lfkit.lifecycle"]["hooks"] == ["lfkit_register_patches"]


def test_entry_point_plugin_shows_distribution_and_hooks(hooklog_site):
    plugins = _by_name(_plugins(hooklog_site))
    hooklog = plugins["hooklog"]
    assert hooklog["source"] == "lfkit-hooklog 1.0"
    assert hooklog["status"] == "loaded"
    assert hooklog["hooks"] == [
        "lfkit_post_model_load",
        "lfkit_post_tokenizer_load",
        "lfkit_prepare_args",
        "lfkit_train_callbacks",
    ]


def test_broken_plugin_is_skipped_and_shown_with_its_error(broken_site, hooklog_site):
    result = _plugins(broken_site, hooklog_site)
    plugins = _by_name(result)
    assert plugins["broken"]["status"] == "failed"
    assert plugins["broken"]["error"] == "import failed: RuntimeError: plugin bug: cannot import me"
    assert plugins["hooklog"]["status"] == "loaded"  # the others still load
    assert "Traceback" not in result.stderr


def test_broken_plugin_does_not_break_help(broken_site):
    result = run([LFKIT, "--help"], env=clean_env(PYTHONPATH=str(broken_site)))
    assert result.returncode == 0
    assert "plugins" in result.stdout and "doctor" in result.stdout


def test_strict_mode_makes_a_broken_plugin_fatal_with_one_line(broken_site):
    result = _plugins(broken_site, LFKIT_STRICT_PLUGINS="1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "lfkit: error: plugin broken (lfkit-broken 0.3): import failed: RuntimeError: plugin bug: cannot import me"
    ]


def test_misspelled_hook_is_an_error(tmp_path):
    site = make_dist(
        tmp_path,
        "lfkit-typo",
        "2.0",
        {"typo": "lfkit_typo"},
        {"lfkit_typo": "def lfkit_register_dataset(register):\n    pass\n"},
    )
    plugins = _by_name(_plugins(site))
    assert plugins["typo"]["status"] == "failed"
    assert plugins["typo"]["error"] == (
        "implements unknown hook(s): lfkit_register_dataset (did you mean lfkit_register_datasets?)"
    )
    strict = _plugins(site, LFKIT_STRICT_PLUGINS="1")
    assert strict.returncode == 2 and "lfkit_register_dataset" in strict.stderr


def test_wrong_hook_arguments_are_an_error(tmp_path):
    site = make_dist(
        tmp_path,
        "lfkit-args",
        "1.0",
        {"args": "lfkit_args"},
        {"lfkit_args": "def lfkit_prepare_args(command, arguments):\n    pass\n"},
    )
    plugins = _by_name(_plugins(site))
    assert plugins["args"]["status"] == "failed"
    assert "arguments" in plugins["args"]["error"]


def test_allow_list(hooklog_site, broken_site):
    plugins = _by_name(_plugins(hooklog_site, broken_site, LFKIT_PLUGINS="hooklog"))
    assert plugins["hooklog"]["status"] == "loaded"
    assert plugins["broken"]["status"] == "not allowed"
    assert plugins["lfkit.lifecycle"]["status"] == "loaded"  # built-ins are not subject to it


def test_registration_provenance_and_duplicates(tmp_path):
    site = make_dist(
        tmp_path,
        "lfkit-dup",
        "1.0",
        {"dup": "lfkit_dup"},
        {
            "lfkit_dup": """
                from lfkit.patching import Patch

                def lfkit_register_patches(register):
                    register(Patch("lf-hook-model-load", "steal a built-in id", "json", lambda m, c: None))
            """
        },
    )
    plugins = _by_name(_plugins(site))
    assert plugins["dup"]["status"] == "failed"
    assert plugins["dup"]["error"] == (
        "lfkit_register_patches: ValueError: patch id 'lf-hook-model-load' is already registered by lfkit.lifecycle"
    )


def test_installing_upgrading_and_removing_a_plugin_shows_at_the_next_command(tmp_path):
    """lfkit keeps what is installed in its cache (lfkit.installed_dists); a change must never be hidden."""
    import shutil

    site = tmp_path / "site"
    site.mkdir()
    assert "later" not in _by_name(_plugins(site))
    make_dist(
        site,
        "lfkit-later",
        "1.0",
        {"later": "lfkit_later"},
        {"lfkit_later": "def lfkit_register_datasets(register):\n    pass\n"},
    )
    assert _by_name(_plugins(site))["later"]["source"] == "lfkit-later 1.0"
    info = site / "lfkit_later-1.0.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lfkit-later\nVersion: 1.1\n")  # rewritten in place
    assert _by_name(_plugins(site))["later"]["source"] == "lfkit-later 1.1"
    shutil.rmtree(info)
    assert "later" not in _by_name(_plugins(site))


@pytest.mark.parametrize("flag", ["--json", None])
def test_patches_listing(flag):
    cmd = [LFKIT, "patches"] + ([flag] if flag else [])
    result = run(cmd)
    assert result.returncode == 0, result.stderr
    if flag:
        rows = {r["id"]: r for r in json.loads(result.stdout)}
        assert set(rows) >= {"lf-hook-prepare-args", "lf-hook-model-load", "lf-hook-train-callbacks"}
        assert rows["lf-hook-model-load"]["status"] == "waiting"
        assert rows["lf-hook-model-load"]["requires"] == {"llamafactory": ">=0.9.3,<0.10"}
    else:
        assert "lf-hook-train-callbacks" in result.stdout


def test_strict_mode_stops_a_python_process_with_one_line(broken_site):
    env = clean_env(PYTHONPATH=str(broken_site), LFKIT_STRICT_PLUGINS="1")
    result = py("import torch\nprint('should not get here')", env=env)
    assert result.returncode == 2
    assert "should not get here" not in result.stdout
    assert result.stderr.strip().splitlines() == [
        "lfkit: error: plugin broken (lfkit-broken 0.3): import failed: RuntimeError: plugin bug: cannot import me"
    ]
    # without strict mode the same process runs
    ok = py("import torch\nprint('ran')", env=clean_env(PYTHONPATH=str(broken_site)))
    assert ok.returncode == 0 and ok.stdout.strip().endswith("ran")
