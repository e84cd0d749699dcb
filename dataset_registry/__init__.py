"""Dataset specs and converters: the telecom and sharegpt datasets known to LLaMA-Factory by name.

A built-in plugin: the bundled datasets and the ones the user prepared or added
(kept under $LFKIT_HOME) register through lfkit_register_datasets, like any
plugin's; the lookup patch makes plain `llamafactory-cli` find them by name.
"""

from pathlib import Path

from lfkit import problems
from lfkit.hookspecs import hookimpl

from . import lookup_patch, state
from .spec import SHAREGPT_DEFAULTS, TELECOM_COLUMNS, DatasetSpec

DATA = Path(__file__).resolve().parent / "data"
SYNTHETIC = "synthetic, made by lfkit.dataset_registry.generate_demo"

BUNDLED = {
    "telecom_demo": DatasetSpec(
        DATA / "telecom_demo.json", columns=TELECOM_COLUMNS, origin="bundled", synthetic=True, description=SYNTHETIC
    ),
    "telecom_demo_test": DatasetSpec(
        DATA / "telecom_demo_test.json",
        columns=TELECOM_COLUMNS,
        origin="bundled",
        synthetic=True,
        description=SYNTHETIC + " (held-out phrasings)",
    ),
    # the one-dialogue sharegpt dataset of the DCU field guide, with its dataset_info.json entry
    "sharegpt_single": DatasetSpec(
        DATA / "sharegpt_single.json",
        formatting="sharegpt",
        columns={"messages": "conversations"},
        tags={k: SHAREGPT_DEFAULTS[k] for k in ("role_tag", "content_tag", "user_tag", "assistant_tag")},
        origin="bundled",
        description="a single sharegpt dialogue, as in the DCU field guide",
    ),
}

__all__ = ["BUNDLED", "DatasetSpec"]


@hookimpl
def lfkit_register_datasets(register):
    for name, spec in BUNDLED.items():
        register(name, spec)
    for name, spec in state.load().items():
        try:
            register(name, spec)
        except ValueError as exc:  # a name the bundled data or a plugin holds already
            problems.report(
                f"dataset registry {state.state_file()}: {exc}", f"`lfkit data remove {name}` and register another name"
            )


@hookimpl
def lfkit_register_patches(register):
    register(lookup_patch.PATCH)
