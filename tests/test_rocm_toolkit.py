from lfkit.rocm_patches.toolkit import find_rocm_toolkit
from simulate_platform import make_toolkit


def _clear(monkeypatch, path=""):
    for var in ("ROCM_HOME", "ROCM_PATH", "DTK_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", path)


def test_environment_variables_first(tmp_path, monkeypatch):
    _clear(monkeypatch)
    root = make_toolkit(tmp_path / "rocm")
    monkeypatch.setenv("ROCM_PATH", str(root))
    assert find_rocm_toolkit() == (root, "$ROCM_PATH")


def test_hipcc_on_path(tmp_path, monkeypatch):
    root = make_toolkit(tmp_path / "rocm-6.3")
    _clear(monkeypatch, path=str(root / "bin"))
    assert find_rocm_toolkit(default_roots=()) == (root, f"hipcc on PATH ({root / 'bin' / 'hipcc'})")


def test_default_folders_dtk_before_rocm(tmp_path, monkeypatch):
    _clear(monkeypatch)
    dtk = make_toolkit(tmp_path / "dtk", version="24.04")
    rocm = make_toolkit(tmp_path / "rocm")
    assert find_rocm_toolkit(default_roots=(str(dtk), str(rocm))) == (dtk, str(dtk))
    assert find_rocm_toolkit(default_roots=(str(tmp_path / "absent"), str(rocm))) == (rocm, str(rocm))


def test_nothing_found(tmp_path, monkeypatch):
    _clear(monkeypatch)
    (tmp_path / "empty").mkdir()
    assert find_rocm_toolkit(default_roots=(str(tmp_path / "empty"),)) is None
