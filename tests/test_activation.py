"""Activation at interpreter start (the .pth) and at `import lfkit`, in fresh interpreters."""

import json

from conftest import clean_env, py, tail

HEAVY = ("torch", "transformers", "llamafactory", "deepspeed", "peft", "bitsandbytes", "pluggy")


def test_bare_interpreter_has_lfkit_and_nothing_heavy():
    result = py(f"""
        import sys, json
        print(json.dumps({{"lfkit": "lfkit" in sys.modules, "autoload": "lfkit._autoload" in sys.modules,
                          "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
    """)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"lfkit": True, "autoload": True, "heavy": []}


def test_the_exact_check_from_the_issue():
    result = py("import sys; print('lfkit' in sys.modules)")
    assert result.stdout.strip() == "True"


def test_autoload_can_be_switched_off():
    for value in ("0", "false", "off"):
        result = py("import sys; print('lfkit' in sys.modules)", env=clean_env(LFKIT_AUTOLOAD=value))
        assert result.stdout.strip() == "False", value


def test_patches_apply_when_their_target_is_first_imported():
    result = py("""
        import sys
        from lfkit.plugin_manager import _manager  # not loaded yet: nothing heavy imported
        assert _manager is None
        import llamafactory.hparams as hp
        from lfkit.plugin_manager import get_manager
        states = get_manager().patches.states
        print(states["lf-hook-prepare-args"].status.value, states["lf-hook-model-load"].status.value)
        print(hasattr(hp.get_train_args, "__wrapped__"))
    """)
    assert result.returncode == 0, result.stderr
    assert tail(result, 2) == ["applied waiting", "True"]


def test_late_import_of_lfkit_applies_at_once_and_rebinds_copies():
    # LLaMA-Factory imported first with activation off; then `import lfkit` activates.
    result = py(
        """
        import llamafactory.hparams as hp
        import llamafactory.model as lm
        assert not hasattr(hp.get_train_args, "__wrapped__")
        import lfkit
        from lfkit.plugin_manager import get_manager
        states = get_manager().patches.states
        print(states["lf-hook-prepare-args"].status.value, states["lf-hook-model-load"].status.value)
        # the names LLaMA-Factory's packages imported by value were rebound too
        print(hasattr(hp.get_train_args, "__wrapped__"), hasattr(lm.load_model, "__wrapped__"))
    """,
        env=clean_env(LFKIT_AUTOLOAD="0"),
    )
    assert result.returncode == 0, result.stderr
    assert tail(result, 2) == ["applied applied", "True True"]


def test_disabled_patches_leave_llamafactory_untouched():
    result = py(
        """
        import llamafactory.hparams as hp
        from lfkit.plugin_manager import get_manager
        print(get_manager().patches.states["lf-hook-prepare-args"].status.value)
        print(hasattr(hp.get_train_args, "__wrapped__"))
    """,
        env=clean_env(LFKIT_DISABLE_PATCHES="all"),
    )
    assert result.returncode == 0, result.stderr
    assert tail(result, 2) == ["disabled", "False"]
