import importlib
import sys
import uuid

from lfkit import import_hooks


def _module(tmp_path, body):
    name = f"lfk_target_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(body)
    return name


def test_callback_runs_after_module_code_and_before_names_are_bound(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    target = _module(tmp_path, "def f():\n    return 'original'\n")
    user = f"lfk_user_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{user}.py").write_text(f"from {target} import f\n")
    seen = []

    def patch(module):
        seen.append(module.f())
        module.f = lambda: "patched"

    import_hooks.when_imported(target, patch)
    importlib.invalidate_caches()
    mod = importlib.import_module(user)
    assert seen == ["original"]
    # the importer's `from target import f` got the patched function
    assert mod.f() == "patched"
    # the real loader is back in place: nothing keeps a reference to the wrapper
    assert type(sys.modules[target].__loader__).__name__ == "SourceFileLoader"
    assert type(sys.modules[target].__spec__.loader).__name__ == "SourceFileLoader"


def test_callback_runs_at_once_when_module_is_already_imported(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    target = _module(tmp_path, "X = 1\n")
    importlib.import_module(target)
    seen = []
    import_hooks.when_imported(target, lambda m: seen.append(m.X))
    assert seen == [1]


def test_failing_callback_never_breaks_the_import(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    target = _module(tmp_path, "X = 2\n")

    def boom(module):
        raise ValueError("lfkit bug")

    import_hooks.when_imported(target, boom)
    assert importlib.import_module(target).X == 2
    assert "lfkit bug" in capsys.readouterr().err


def test_root_trigger_fires_once_before_the_first_module_of_a_root(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    pkg = f"lfk_pkg_{uuid.uuid4().hex[:8]}"
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / pkg / "sub.py").write_text("")
    fired = []
    import_hooks.when_any_imported({pkg}, fired.append)
    importlib.import_module(f"{pkg}.sub")
    assert fired == [pkg]
