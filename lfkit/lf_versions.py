"""The LLaMA-Factory releases lfkit supports, and the places where their code differs.

A new LLaMA-Factory release is added here: widen ``SUPPORTED`` (pyproject.toml says the same, a
test holds them equal), and give each fact below its answer for that release. The patches ask
these functions instead of comparing versions themselves, so one release's differences sit in
one place. Each fact names the first release it holds for and the code that shows it.

- 0.9.3: the last release for Python 3.10 and torch < 2.4 (DTK's torch builds).
- 0.9.4: torchrun moves from ``llamafactory/cli.py`` to ``llamafactory/launcher.py`` (both set
  ``expandable_segments:True`` for the workers); ``get_dataset_list`` takes a dict for dataset_dir.
- 0.9.5: the ``baichuan2`` chat template is removed.

``STACKS`` is the support table: for each range of releases, the torch and Python it runs with and
what CI tests it on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # packaging is imported where a version is compared: this module loads with the plugins
    from packaging.version import Version

# The range lfkit is tested on (CI runs 0.9.3 and 0.9.5); every LLaMA-Factory guard uses it.
SUPPORTED = ">=0.9.3,<0.10"
RANGE = {"llamafactory": SUPPORTED}


def installed() -> Version | None:
    """The installed LLaMA-Factory's version (lfkit.installed_dists: no import of it)."""
    from packaging.version import Version

    from .installed_dists import version

    found = version("llamafactory")
    try:
        return Version(found) if found else None
    except ValueError:
        return None


def _from(release: str) -> bool:
    """Is the installed LLaMA-Factory ``release`` or newer? (An unknown one counts as the newest.)"""
    from packaging.version import Version

    found = installed()
    return found is None or found.release >= Version(release).release


def torchrun_module() -> str:
    """The module whose ``subprocess.run`` starts torchrun for multi-worker training."""
    return "llamafactory.launcher" if _from("0.9.4") else "llamafactory.cli"


def has_baichuan2_template() -> bool:
    """Does LLaMA-Factory register a ``baichuan2`` chat template of its own?"""
    return not _from("0.9.5")


# The arguments the newest tested stack (LLaMA-Factory 0.9.5 with transformers 5.6) parses and the DCU
# stack (0.9.3 with transformers 4.52.4) does not, read off both stacks' argument classes: a run on the
# older one that asks for one of them is told it needs a later release, not that the key is unknown.
NEWER_ARGUMENTS = frozenset({
    "asft_alpha", "ddp_static_graph", "eaft_alpha", "enable_jit_checkpoint", "enable_torch_profiler", "fp8",
    "fp8_backend", "fp8_enable_fsdp_float8_all_gather", "hub_revision", "hyper_parallel_args",
    "init_special_tokens", "kt_expert_checkpoint_path", "kt_lora_expert_intermediate_size",
    "kt_lora_expert_num", "kt_use_lora_experts", "kt_weight_path", "liger_kernel_config",
    "module_dropout", "new_special_tokens_config", "oft_block_size", "oft_rank", "oft_target",
    "parallelism_config", "pref_bco_weight", "preserve_thinking", "profile_modules", "profiler_active_steps",
    "profiler_output_dir", "profiler_profile_memory", "profiler_record_shapes", "profiler_repeat",
    "profiler_wait_steps", "profiler_warmup_steps", "profiler_with_stack", "project", "trackio_bucket_id",
    "trackio_space_id", "trackio_static_space_id", "train_sampling_strategy", "use_asft_loss",
    "use_dft_loss", "use_eaft_loss", "use_hyper_parallel", "use_kt", "use_kv_cache", "use_mca",
    "use_v1_kernels",
})  # fmt: skip


def newer_argument(key: str) -> str | None:
    """Where ``key`` is an argument of a later release than the installed one, which stack has it."""
    found = installed()
    if key in NEWER_ARGUMENTS and found is not None and not _from("0.9.4"):
        return "LLaMA-Factory 0.9.5 with transformers 5.6"
    return None


def describe() -> str:
    """The installed release in words, for a skip line."""
    found = installed()
    return f"LLaMA-Factory {found}" if found else "this LLaMA-Factory"


# The supported stacks: each LLaMA-Factory release belongs to one row, which says the torch and Python
# it runs with, who ships that torch, and the versions CI tests the row on (`lfkit doctor` says which
# row an environment is in, or which of its parts is outside). README's support table shows these rows.


@dataclass(frozen=True)
class Part:
    """One cell of the support table: ``text`` as the table writes it, ``spec`` the versions it means
    (compared on the release numbers: DTK's ``2.1.0a0+git793d2b5.abi0.dtk2310`` is torch 2.1.0)."""

    text: str
    spec: str

    def holds(self, found: str | None) -> bool:
        from packaging.specifiers import SpecifierSet  # not at interpreter start: lfkit.lifecycle imports this module
        from packaging.version import Version

        numbers = release(found)
        return numbers is not None and SpecifierSet(self.spec, prereleases=True).contains(
            Version(".".join(map(str, numbers)))
        )


@dataclass(frozen=True)
class Stack:
    name: str
    llamafactory: Part
    torch: Part
    python: Part
    torch_from: str  # who ships that torch
    ci: dict[str, str]  # distribution -> the version CI tests this row with
    constraints: str  # the file CI installs those versions from

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **{part: getattr(self, part).text for part in ("llamafactory", "torch", "python")},
            "torch_from": self.torch_from,
            "ci": dict(self.ci),
            "constraints": self.constraints,
        }


STACKS = (
    Stack(
        name="DTK",
        llamafactory=Part("0.9.3", ">=0.9.3,<0.9.4"),
        torch=Part("2.1 – 2.5", ">=2.1,<2.6"),
        python=Part("3.10 +", ">=3.10"),  # lfkit needs 3.10 (LLaMA-Factory 0.9.3 itself takes 3.9)
        torch_from="DTK 23.10 (torch 2.1), DTK 24.04 (2.1 / 2.3), DTK 25.04 (2.4 / 2.5)",
        ci={"llamafactory": "0.9.3", "torch": "2.1.2", "transformers": "4.52.4"},
        constraints="constraints/dtk-torch2.1.txt",
    ),
    Stack(
        name="ROCm / CUDA / CPU",
        llamafactory=Part("0.9.4 – 0.9.5", ">=0.9.4,<0.10"),
        torch=Part("2.4 +", ">=2.4"),
        python=Part("3.11 +", ">=3.11"),
        torch_from="ROCm 6.x / 7.x wheels, CUDA, CPU",
        ci={"llamafactory": "0.9.5", "torch": "2.11.0"},
        constraints="constraints/dev.txt",
    ),
)
# How the parts are named in a sentence.
LABELS = {"llamafactory": "LLaMA-Factory", "torch": "torch", "python": "Python", "transformers": "transformers"}


def release(found: str | None) -> tuple[int, ...] | None:
    """``found``'s release numbers alone (no pre-release, no local build tag: DTK's
    ``2.1.0a0+git793d2b5.abi0.dtk2310`` is ``(2, 1, 0)``), or None for no or an unreadable version."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(found).release if found else None
    except InvalidVersion:
        return None


def same_version(a: str | None, b: str | None) -> bool:
    """Do two version strings name one release build (``2.11.0`` and ``2.11.0+cu130`` do)?"""
    from packaging.version import InvalidVersion, Version

    try:
        return a is not None and b is not None and Version(a).public == Version(b).public
    except InvalidVersion:
        return a == b


def stack_of(found: dict[str, str | None]) -> tuple[Stack | None, list[str]]:
    """The row of ``found`` (llamafactory, torch and python versions), or None and what puts them
    outside every row, one sentence per part."""
    lf = found.get("llamafactory")
    if lf is None:
        return None, ["LLaMA-Factory is not installed"]
    row = next((stack for stack in STACKS if stack.llamafactory.holds(lf)), None)
    if row is None:
        releases = " or ".join(stack.llamafactory.text for stack in STACKS)
        return None, [f"LLaMA-Factory {lf} is in no row (the rows take LLaMA-Factory {releases})"]
    outside = []
    for part in ("torch", "python"):
        if found.get(part) is None:
            outside.append(f"{LABELS[part]} is not installed")
        elif not getattr(row, part).holds(found[part]):
            cell = getattr(row, part).text
            outside.append(f"{LABELS[part]} {found[part]} is outside the {row.name} row ({LABELS[part]} {cell})")
    if outside:
        # torch and Python alone may fit another row: which LLaMA-Factory that row takes
        torch, python = found.get("torch"), found.get("python")
        for other in (s for s in STACKS if s is not row and s.torch.holds(torch) and s.python.holds(python)):
            outside.append(
                f"torch {torch} with Python {python} fit the {other.name} row, "
                f"which takes LLaMA-Factory {other.llamafactory.text}"
            )
        return None, outside
    return row, []
