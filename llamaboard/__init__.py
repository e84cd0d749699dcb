"""LlamaBoard (``llamafactory-cli webui``) sees lfkit: its registered datasets in the dataset
dropdowns and the preview, and the memory plan of the current choices under the train tab.

Declared patches like the ROCm fixes (``lfkit patches``; ``LFKIT_DISABLE_PATCHES`` turns each
off and leaves LlamaBoard as LLaMA-Factory made it). A training started from the web UI leaves
the patch statuses of its processes in its output folder (``lfkit.worker_report``).
"""

from lfkit.hookspecs import hookimpl

from . import datasets, fit_line


@hookimpl
def lfkit_register_patches(register):
    register(datasets.DROPDOWN_PATCH)
    register(datasets.PREVIEW_PATCH)
    register(fit_line.PATCH)
