"""lfkit's registered datasets in LlamaBoard's dataset dropdowns (train and evaluate tabs) and preview.

LlamaBoard lists and previews only the entries of ``dataset_dir/dataset_info.json``. These patches
add the datasets registered with lfkit (bundled, prepared, added, from plugins), labelled as lfkit's;
the user's own entry wins a name clash, as in training. Training and evaluation started from the UI
find them through the ``lf-dataset-lookup`` patch, as plain ``llamafactory-cli`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lfkit.dataset_registry.lookup_patch import not_a_folder, registered, user_entries
from lfkit.lf_versions import RANGE as LF_RANGE
from lfkit.patching import Patch, PatchContext

LABEL = "{name} (lfkit)"


def _own_names(dataset_dir: str | None) -> set[str]:
    """The names in the folder's own dataset_info.json (none for an online or unreadable one)."""
    if not dataset_dir or not_a_folder(dataset_dir):
        return set()
    try:
        return set(user_entries(dataset_dir) or {})
    except (OSError, ValueError, AttributeError):  # LlamaBoard shows its own warning for such a file
        return set()


def lfkit_entries(dataset_dir: str | None) -> dict[str, dict[str, Any]]:
    """The dataset_info.json entries lfkit adds for this folder: the registered datasets whose
    names the folder does not hold itself."""
    own = _own_names(dataset_dir)
    return {name: entry.value.dataset_info() for name, entry in registered().items() if name not in own}


def _apply_dropdown(control, ctx: PatchContext) -> None:
    original = control.list_datasets

    def list_datasets(dataset_dir=None, training_stage=next(iter(control.TRAINING_STAGES))):
        dropdown = original(dataset_dir, training_stage)
        ranking = control.TRAINING_STAGES[training_stage] in control.STAGES_USE_PAIR_DATA
        extra = [
            (LABEL.format(name=name), name)
            for name, info in lfkit_entries(
                dataset_dir if dataset_dir is not None else control.DEFAULT_DATA_DIR
            ).items()
            if info.get("ranking", False) == ranking
        ]
        if not extra:
            return dropdown
        own = [choice if isinstance(choice, tuple) else (choice, choice) for choice in dropdown.choices or []]
        return control.gr.Dropdown(choices=[*own, *extra])

    list_datasets.__wrapped__ = original
    ctx.replace_everywhere(control, "list_datasets", list_datasets, "llamafactory.webui")


def _registered_file(dataset_dir: str, dataset: list) -> Path | None:
    """The data file of the first chosen dataset when it is lfkit's (None when it is the folder's)."""
    if not dataset:
        return None
    info = lfkit_entries(dataset_dir).get(dataset[0])
    return Path(info["file_name"]) if info else None


def _apply_preview(data, ctx: PatchContext) -> None:
    can_preview, get_preview = data.can_preview, data.get_preview

    def lfkit_can_preview(dataset_dir, dataset):
        path = _registered_file(dataset_dir, dataset)
        if path is None:
            return can_preview(dataset_dir, dataset)
        return data.gr.Button(interactive=path.is_file())

    def lfkit_get_preview(dataset_dir, dataset, page_index):
        path = _registered_file(dataset_dir, dataset)
        if path is None:
            return get_preview(dataset_dir, dataset, page_index)
        rows = data._load_data_file(str(path))
        size = data.PAGE_SIZE
        return len(rows), rows[size * page_index : size * (page_index + 1)], data.gr.Column(visible=True)

    lfkit_can_preview.__wrapped__, lfkit_get_preview.__wrapped__ = can_preview, get_preview
    ctx.replace(data, "can_preview", lfkit_can_preview)
    ctx.replace(data, "get_preview", lfkit_get_preview)


DROPDOWN_PATCH = Patch(
    id="webui-datasets",
    why="list lfkit's registered datasets in LlamaBoard's dataset dropdowns",
    target="llamafactory.webui.control",
    apply=_apply_dropdown,
    reference="LLaMA-Factory v0.9.3-v0.9.5 webui/control.py list_datasets (reads only dataset_dir/dataset_info.json)",
    requires=LF_RANGE,
)
PREVIEW_PATCH = Patch(
    id="webui-dataset-preview",
    why="let LlamaBoard's preview button show the rows of lfkit's registered datasets",
    target="llamafactory.webui.components.data",
    apply=_apply_preview,
    reference="LLaMA-Factory v0.9.3-v0.9.5 webui/components/data.py can_preview, get_preview",
    requires=LF_RANGE,
)
