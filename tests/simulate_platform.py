"""Make this interpreter's torch look like a ROCm or DTK build (tests only).

Call right after ``import torch`` and before the library under test is imported,
as the issue prescribes: torch.version.hip set, torch.version.cuda None, one
visible device of the given gfx architecture, and no toolkit found by torch
(ROCM_HOME / CUDA_HOME None: a pip-installed ROCm torch, or DTK without its env
script sourced). kind="cuda" is the control: a CUDA build with one NVIDIA device.

The device answers torch.cuda.current_device too: torch 2.1's inductor asks it when
it is imported (has_triton(), with triton installed; torch 2.11 does not), and
`import deepspeed` imports inductor (deepspeed.compile: 0.16.9 and 0.18.0 do, 0.14.5 not).
"""

from __future__ import annotations

import types
from pathlib import Path


def simulate(
    kind: str = "rocm", arch: str = "gfx90a", hip: str = "6.2.41133", name: str = "AMD Instinct MI210", devices: int = 1
) -> None:
    """devices=0: a HIP build with no visible GPU, so a whole LLaMA-Factory run can go on the CPU."""
    import torch
    import torch.utils.cpp_extension as cpp_extension

    if kind == "cuda":  # an A100: arch, hip and name do not apply; torch's own toolkit search stands
        torch.version.hip = None
        torch.version.cuda = torch.version.cuda or "12.1"
        props = types.SimpleNamespace(
            name="NVIDIA A100-SXM4-80GB", major=8, minor=0, total_memory=80 * 2**30, multi_processor_count=108
        )
    else:
        torch.version.hip = hip
        torch.version.cuda = None
        if kind == "dtk":
            from torch.torch_version import TorchVersion

            torch.__version__ = TorchVersion("2.1.0a0+git793d2b5.abi0.dtk2310")
        props = types.SimpleNamespace(
            name=name,
            major=9,
            minor=0,
            total_memory=16 * 2**30,
            gcnArchName=f"{arch}:sramecc+:xnack-",
            multi_processor_count=60,
        )
        cpp_extension.ROCM_HOME = None
        cpp_extension.CUDA_HOME = None
    if not devices:
        return
    torch.cuda.is_available = lambda: True
    torch.cuda.is_bf16_supported = lambda *a, **k: True  # what HIP answers, whatever the architecture
    torch.cuda.device_count = lambda: devices
    torch.cuda.current_device = lambda: 0
    torch.cuda.get_device_properties = lambda *a, **k: props
    torch.cuda.get_device_capability = lambda *a, **k: (props.major, props.minor)


def make_toolkit(root: Path, version: str = "6.2.41133-81") -> Path:
    """A toolkit folder laid out like /opt/rocm: bin/hipcc and .info/version."""
    (root / "bin").mkdir(parents=True)
    hipcc = root / "bin" / "hipcc"
    hipcc.write_text(f"#!/bin/sh\necho 'HIP version: {version}'\n")
    hipcc.chmod(0o755)
    (root / ".info").mkdir()
    (root / ".info" / "version").write_text(version + "\n")
    return root
