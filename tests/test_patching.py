import importlib
import sys
import uuid

import pytest

from lfkit.patching import Patch, PatchRegistry, Status


@pytest.fixture
def target(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"lfk_patch_target_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def f():\n    return 'original'\n")
    yield name
    sys.modules.pop(name, None)


def _wrap_f(module, ctx):
    inner = module.f
    ctx.replace(module, "f", lambda: "patched:" + inner())


def _registry(*patches):
    reg = PatchRegistry()
    for p in patches:
        reg.add(p, plugin="test")
    return reg


def test_waits_for_target_then_applies_once_and_reverts(target):
    reg = _registry(Patch("wrap-f", "test", target, _wrap_f))
    reg.arm()
    assert reg.states["wrap-f"].status is Status.WAITING
    module = importlib.import_module(target)
    assert reg.states["wrap-f"].status is Status.APPLIED
    assert module.f() == "patched:original"
    reg.apply_now("wrap-f")  # twice is once
    assert module.f() == "patched:original"
    # a second registry (say lfkit imported twice) sees the sentinel and does not wrap again
    other = _registry(Patch("wrap-f", "test", target, _wrap_f))
    other.apply_now("wrap-f")
    assert module.f() == "patched:original"
    reg.revert("wrap-f")
    assert module.f() == "original"
    assert reg.states["wrap-f"].status is Status.REVERTED
    assert module.f.__name__ == "f"  # the module's own function, not the wrapper


def test_outside_the_verified_version_range_the_patch_is_skipped(target):
    reg = _registry(Patch("p", "test", target, _wrap_f, requires={"pluggy": "<1.0"}))
    reg.arm()
    module = importlib.import_module(target)
    state = reg.states["p"]
    assert state.status is Status.SKIPPED
    assert "outside the verified range <1.0" in state.detail
    assert module.f() == "original"


def test_missing_distribution_is_a_skip_reason(target):
    reg = _registry(Patch("p", "test", target, _wrap_f, requires={"no-such-dist-lfkit": ">=1"}))
    reg.arm()
    importlib.import_module(target)
    assert reg.states["p"].detail == "no-such-dist-lfkit is not installed"


def test_platform_guard_reads_torch_when_the_patch_applies(target, monkeypatch):
    import torch

    reg = _registry(Patch("rocm-only", "test", target, _wrap_f, platforms=frozenset({"rocm"})))
    # simulate ROCm after torch was imported and before the target is
    monkeypatch.setattr(torch.version, "hip", "6.2.41133", raising=False)
    reg.arm()
    module = importlib.import_module(target)
    assert reg.states["rocm-only"].status is Status.APPLIED
    assert module.f() == "patched:original"


def test_platform_guard_skips_on_cpu_and_touches_nothing(target):
    reg = _registry(Patch("rocm-only", "test", target, _wrap_f, platforms=frozenset({"rocm", "dtk"})))
    reg.arm()
    module = importlib.import_module(target)
    state = reg.states["rocm-only"]
    assert state.status is Status.SKIPPED
    assert state.detail.startswith("platform is cpu")
    assert module.f() == "original"


def test_disabled_by_environment(target, monkeypatch):
    monkeypatch.setenv("LFKIT_DISABLE_PATCHES", "other, p")
    reg = _registry(Patch("p", "test", target, _wrap_f), Patch("q", "test", target, _wrap_f))
    reg.arm()
    module = importlib.import_module(target)
    assert reg.states["p"].status is Status.DISABLED
    assert reg.states["q"].status is Status.APPLIED
    assert module.f() == "patched:original"
    monkeypatch.setenv("LFKIT_DISABLE_PATCHES", "all")
    reg2 = _registry(Patch("r", "test", target, _wrap_f))
    reg2.arm()
    assert reg2.states["r"].status is Status.DISABLED


def test_a_failing_patch_is_reported_and_its_partial_changes_undone(target, monkeypatch):
    def half_then_fail(module, ctx):
        ctx.replace(module, "f", lambda: "half")
        ctx.setenv("LFKIT_TEST_PATCH_ENV", "set")
        raise AttributeError("no attribute 'g'")

    monkeypatch.delenv("LFKIT_TEST_PATCH_ENV", raising=False)
    reg = _registry(Patch("bad", "test", target, half_then_fail))
    reg.arm()
    module = importlib.import_module(target)
    state = reg.states["bad"]
    assert state.status is Status.FAILED
    assert state.detail == "AttributeError: no attribute 'g'"
    assert module.f() == "original"
    import os

    assert "LFKIT_TEST_PATCH_ENV" not in os.environ


def test_duplicate_ids_and_unknown_platforms_are_rejected(target):
    reg = _registry(Patch("p", "test", target, _wrap_f))
    with pytest.raises(ValueError, match="already registered by test"):
        reg.add(Patch("p", "test", target, _wrap_f), plugin="other")
    with pytest.raises(ValueError, match="unknown platform"):
        Patch("x", "test", target, _wrap_f, platforms=frozenset({"metal"}))


def test_platform_guard_skips_on_simulated_cuda(target, monkeypatch):
    import torch

    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    reg = _registry(Patch("rocm-only", "test", target, _wrap_f, platforms=frozenset({"rocm", "dtk"})))
    reg.arm()
    module = importlib.import_module(target)
    assert reg.states["rocm-only"].detail == "platform is cuda, patch is for dtk/rocm"
    assert module.f() == "original"
