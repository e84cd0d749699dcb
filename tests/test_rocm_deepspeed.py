"""DeepSpeed on a HIP torch without ROCM_HOME: the real failure in the real library, then lfkit's fix.

Runs against several DeepSpeed releases, each pip-installed into its own folder,
plus the one in the test environment.
"""

import os
from importlib.metadata import version as dist_version
from pathlib import Path

import pytest
from packaging.version import Version

from conftest import clean_env, deepspeed_release, probe, py
from simulate_platform import make_toolkit

pytestmark = [pytest.mark.slow, pytest.mark.both_stacks]
TESTS = Path(__file__).resolve().parent
RELEASES = ["0.14.5", "0.16.9", "0.18.0"]
PATCH_ID = "deepspeed-rocm-cuda-check"

PROBE = """
import contextlib, io, json, os, sys
import torch
from simulate_platform import simulate
simulate(kind=os.environ.get("SIM_KIND", "rocm"), arch=os.environ.get("SIM_ARCH", "gfx90a"),
         hip=os.environ.get("SIM_HIP", "6.2.41133"))

def attempt(fn):
    try:
        return fn()
    except BaseException as exc:
        return f"{type(exc).__name__}: {str(exc)[:120]}"

report = {}
def do_import():
    import deepspeed
    return deepspeed.__version__
report["import"] = attempt(do_import)
if "Error" not in report["import"] and "Exception" not in report["import"]:
    from deepspeed.ops.op_builder import builder
    from deepspeed.ops.op_builder import transformer_inference
    from deepspeed.ops.op_builder import FusedAdamBuilder
    report["assert_no_cuda_mismatch"] = attempt(lambda: builder.assert_no_cuda_mismatch("fused_adam"))
    report["installed_cuda_version_by_name"] = attempt(lambda: list(transformer_inference.installed_cuda_version()))
    report["is_rocm_pytorch"] = builder.OpBuilder.is_rocm_pytorch()
    report["wavefront"] = builder.OpBuilder.get_rocm_wavefront_size()
    report["gpu_arch"] = builder.OpBuilder.get_rocm_gpu_arch()
    report["rocm_home"] = torch.utils.cpp_extension.ROCM_HOME
    # CUDAOpBuilder.nvcc_args: the compiler flags most ops build with (FusedAdam overrides it)
    report["hip_build_args"] = attempt(lambda: [a for a in builder.CUDAOpBuilder.nvcc_args(FusedAdamBuilder()) if "ROCM" in a or "HIP" in a])
    def ds_report():
        from deepspeed.env_report import op_report
        with contextlib.redirect_stdout(io.StringIO()) as out:
            op_report(verbose=False)
        return "fused_adam" in out.getvalue()
    report["ds_report"] = attempt(ds_report)
from lfkit.plugin_manager import get_manager
state = get_manager().patches.states["deepspeed-rocm-cuda-check"]
report["patch"] = [state.status.value, state.detail]
print("REPORT " + json.dumps(report))
"""


def _probe(site, tmp_path, fixed: bool, toolkit: Path | None, **env):
    paths = [str(TESTS)] + ([str(site)] if site else [])
    extra = {"PYTHONPATH": os.pathsep.join(paths), "PATH": os.environ["PATH"], **env}
    if toolkit is not None:
        extra["ROCM_PATH"] = str(toolkit)
    if not fixed:
        extra["LFKIT_DISABLE_PATCHES"] = PATCH_ID
    return probe(PROBE, env=clean_env(**extra), cwd=tmp_path)


@pytest.fixture(scope="session", params=RELEASES + ["installed"])
def deepspeed_site(request, tmp_path_factory):
    """(version, folder to put on PYTHONPATH or None for the test environment's own)."""
    if request.param == "installed":
        return dist_version("deepspeed"), None
    return request.param, deepspeed_release(tmp_path_factory, request.param)


def test_failure_reproduced_then_fixed(deepspeed_site, tmp_path):
    version, site = deepspeed_site
    toolkit = make_toolkit(tmp_path / "rocm-6.2")
    # ROCM_PATH is set but torch already looked (ROCM_HOME None), as with a late `module load rocm`;
    # without lfkit DeepSpeed still decides this is CUDA.
    broken = _probe(site, tmp_path, fixed=False, toolkit=toolkit)
    assert broken["patch"][0] == "disabled"
    if Version(version) < Version("0.19"):
        # the op scan of `import deepspeed` itself dies
        assert broken["import"] == "MissingCUDAException: CUDA_HOME does not exist, unable to compile CUDA op(s)"
    else:  # 0.19 catches the scan's error (deepspeed#7452), the check itself still raises
        assert broken["assert_no_cuda_mismatch"].startswith("MissingCUDAException: CUDA_HOME does not exist")
        assert broken["is_rocm_pytorch"] is False
        assert broken["wavefront"] == "32"

    fixed = _probe(site, tmp_path, fixed=True, toolkit=toolkit)
    assert fixed["patch"] == ["applied", ""]
    assert fixed["import"] == version  # imports, whatever else it would raise (the report then says)
    assert fixed["assert_no_cuda_mismatch"] is True
    assert fixed["installed_cuda_version_by_name"] == [6, 2]
    assert fixed["is_rocm_pytorch"] is True
    assert fixed["rocm_home"] == str(toolkit)
    assert fixed["wavefront"] == "64"  # gfx90a: DeepSpeed alone falls back to 32 without rocminfo
    assert fixed["gpu_arch"] == "gfx90a"
    assert "-DROCM_VERSION_MAJOR=6" in fixed["hip_build_args"]
    assert fixed["ds_report"] is True


def test_without_any_toolkit_import_and_report_still_work(deepspeed_site, tmp_path):
    fixed = _probe(deepspeed_site[1], tmp_path, fixed=True, toolkit=None, SIM_ARCH="gfx1100")
    assert fixed["patch"] == ["applied", ""]
    assert fixed["import"] == deepspeed_site[0]
    assert fixed["assert_no_cuda_mismatch"] is True
    assert fixed["is_rocm_pytorch"] is True
    assert fixed["rocm_home"] is None
    assert fixed["wavefront"] == "32"  # RDNA really is 32 wide
    assert "-DROCM_VERSION_MAJOR=6" in fixed["hip_build_args"]  # from torch.version.hip
    assert fixed["ds_report"] is True


def test_dtk_takes_the_hip_version_not_the_dtk_release(tmp_path):
    dtk = make_toolkit(tmp_path / "dtk-24.04", version="24.04")
    fixed = _probe(
        None,
        tmp_path,
        fixed=True,
        toolkit=None,
        SIM_KIND="dtk",
        SIM_HIP="5.7.24164",
        SIM_ARCH="gfx928",
        DTK_PATH=str(dtk),
    )
    assert fixed["patch"] == ["applied", ""]
    assert fixed["import"] == dist_version("deepspeed")
    assert fixed["rocm_home"] == str(dtk)
    assert "-DROCM_VERSION_MAJOR=5" in fixed["hip_build_args"]  # not 24, DTK's own release number
    assert fixed["wavefront"] == "64"  # DCU parts are gfx9-derived


@pytest.mark.parametrize("platform", ["cpu", "cuda"])
def test_on_cpu_and_cuda_the_patch_skips_and_touches_nothing(platform):
    # cpu: this machine as it is, DeepSpeed picks its CPU accelerator. cuda: torch simulated as a CUDA
    # build with an A100, DeepSpeed on its CUDA accelerator. That accelerator asks the device while
    # `import deepspeed` runs where triton is installed (the DTK stack): without a device, 0.16.9 dies
    # there ("Found no NVIDIA driver", is_triton_supported; guarded since deepspeed#7168), lfkit or not.
    simulate = f"from simulate_platform import simulate; simulate(kind={platform!r})" if platform == "cuda" else ""
    result = py(
        f"""
        import torch
        {simulate}
        import deepspeed
        from deepspeed.accelerator import get_accelerator
        from deepspeed.ops.op_builder import builder, transformer_inference
        from lfkit.plugin_manager import get_manager
        state = get_manager().patches.states["deepspeed-rocm-cuda-check"]
        print(get_accelerator().device_name(), "|", state.status.value, "|", state.detail)
        print(hasattr(builder.assert_no_cuda_mismatch, "__wrapped__"),
              hasattr(transformer_inference.installed_cuda_version, "__wrapped__"),
              builder.OpBuilder._is_rocm_pytorch)
    """,
        env=clean_env(PYTHONPATH=str(TESTS), **({"DS_ACCELERATOR": "cuda"} if platform == "cuda" else {})),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()[-2:]
    assert lines[0] == f"{platform} | skipped | platform is {platform}, patch is for dtk/rocm"
    # lfkit sets no ROCm answer: None where DeepSpeed has not asked, its own False where its import's op
    # scan asked (an op's is_compatible() with a device visible: 0.16.9 on the simulated A100)
    assert lines[1] in ("False False None", "False False False")
