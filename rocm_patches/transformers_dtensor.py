"""transformers 4.52 on torch < 2.5: ``save_pretrained`` looks for DTensor where only torch 2.5 has it.

transformers 4.52.0-4.52.4 name ``torch.distributed.tensor.DTensor`` in every safetensors save
(the default, and what merging a LoRA adapter then saving does, as LLaMA-Factory's export):

- ``pytorch_utils.id_tensor_storage`` imports it whenever torch is 2.0 or newer, so on
  torch 2.1-2.4 (Hygon DTK's builds among them) the save dies with
  ``ImportError: cannot import name 'DTensor' from 'torch.distributed.tensor'``;
- ``modeling_utils`` binds the name only on torch >= 2.5, yet ``save_pretrained`` asks
  ``isinstance(..., DTensor)`` of every tensor it writes: a NameError once the import is mended.

torch < 2.5 keeps the class at ``torch.distributed._tensor.DTensor``. The fix, applied when
transformers.modeling_utils is imported, hands transformers that class under the name it
expects: ``modeling_utils.DTensor``, and an ``id_tensor_storage`` that checks against it (with
transformers' own body otherwise), also where transformers imported it by name. torch's own
modules are left as they are.

transformers 4.51 and older do not name DTensor on torch < 2.5, and 4.53 asks for it only on
torch >= 2.5 (4.51.3 and 4.53.0 save on torch 2.1.2 unpatched): there is nothing to fix there.
"""

from __future__ import annotations

import functools
import importlib

from lfkit.patching import Patch, PatchContext, SkipPatch, distribution_version

# The releases whose code names DTensor unguarded: 4.52.0, 4.52.1, 4.52.3 and 4.52.4 were read;
# the test shows the failure and the fix on 4.52.4. Kept in the condition rather than in
# `requires`, so every other release reads "nothing to fix", not "outside the verified range".
AFFECTED = ">=4.52.0.dev0,<4.53.0.dev0"
PUBLIC = "torch.distributed.tensor"


class _NoDTensor:
    """What transformers checks against on a torch built without torch.distributed: no tensor is one."""


def nothing_to_fix() -> str | None:
    """Why this stack has nothing to fix, or None; read from the installed versions, torch is not imported."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    torch_version, transformers_version = distribution_version("torch"), distribution_version("transformers")
    if torch_version is None:
        return "torch is not installed"
    if transformers_version is None:
        return "transformers is not installed"
    try:
        torch_release, transformers_release = Version(torch_version), Version(transformers_version)
    except InvalidVersion:
        return None  # apply looks at the code itself
    if torch_release.release[:2] >= (2, 5):  # a 2.5.0a0+git... build (DTK's naming) has it too
        return f"torch {torch_version} has DTensor in {PUBLIC}"
    if transformers_release in SpecifierSet(AFFECTED, prereleases=True):
        return None
    if transformers_release < Version("4.52.0.dev0"):
        return f"transformers {transformers_version} does not import DTensor on torch < 2.5"
    return f"transformers {transformers_version} imports DTensor only on torch >= 2.5"


def _dtensor_class() -> tuple[str, type]:
    """Where this torch keeps DTensor, and the class: public (torch >= 2.5), in _tensor (torch < 2.5), or none."""
    for name in (PUBLIC, "torch.distributed._tensor"):
        try:
            found = getattr(importlib.import_module(name), "DTensor", None)
        except ImportError:
            continue
        if found is not None:
            return f"{name}.DTensor", found
    return "a stand-in DTensor (this torch has no torch.distributed)", _NoDTensor


def _public_has_dtensor() -> bool:
    try:
        return hasattr(importlib.import_module(PUBLIC), "DTensor")
    except ImportError:
        return False


def apply(modeling_utils, ctx: PatchContext) -> str:
    import torch
    from transformers import pytorch_utils

    # Each part is mended only where this transformers' code names DTensor and this torch lacks
    # it there, so a build that carries upstream's guard is left as it is.
    storage_needs_it = PUBLIC in pytorch_utils.id_tensor_storage.__code__.co_names and not _public_has_dtensor()
    save_needs_it = "DTensor" in modeling_utils.PreTrainedModel.save_pretrained.__code__.co_names and not hasattr(
        modeling_utils, "DTensor"
    )
    if not (storage_needs_it or save_needs_it):
        raise SkipPatch(f"save_pretrained finds DTensor on torch {torch.__version__}")
    where, dtensor = _dtensor_class()
    mended = []
    if storage_needs_it:
        original = pytorch_utils.id_tensor_storage

        # transformers 4.52's body, with the DTensor of this torch.
        @functools.wraps(original)
        def id_tensor_storage(tensor):
            if isinstance(tensor, dtensor):
                local_tensor = tensor.to_local()
                return tensor.device, local_tensor.storage().data_ptr(), tensor.nbytes
            if tensor.device.type == "xla" and pytorch_utils.is_torch_xla_available():
                import torch_xla

                unique_id = torch_xla._XLAC._xla_get_tensor_id(tensor)
            else:
                unique_id = pytorch_utils.storage_ptr(tensor)
            return tensor.device, unique_id, pytorch_utils.storage_size(tensor)

        ctx.replace_everywhere(pytorch_utils, "id_tensor_storage", id_tensor_storage, "transformers")
        mended.append("id_tensor_storage")
    if save_needs_it:
        ctx.replace(modeling_utils, "DTensor", dtensor)
        mended.append("save_pretrained")
    return f"{' and '.join(mended)} use {where}"


PATCH = Patch(
    id="transformers-dtensor-import",
    why="save_pretrained in transformers 4.52 imports DTensor from torch.distributed.tensor, which torch < 2.5 lacks",
    target="transformers.modeling_utils",
    apply=apply,
    reference="https://github.com/huggingface/transformers/issues/38639; "
    "https://github.com/huggingface/transformers/issues/38973",
    platforms=None,
    condition=nothing_to_fix,
)
