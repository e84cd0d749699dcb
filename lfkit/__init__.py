"""lfkit: ROCm/DTK fixes, datasets, recipes and model plugins for LLaMA-Factory.

``import lfkit`` activates it (see lfkit.activation); the lfkit-autoload.pth
installed with the package does that in every interpreter of the environment.
"""

__version__ = "0.1.0"


def _activate() -> None:
    import sys

    from .activation import activate

    try:
        activate()
    except Exception as exc:  # noqa: BLE001 - never break the user's interpreter
        if getattr(exc, "lfkit_fatal", False):
            raise
        sys.stderr.write(f"lfkit: activation failed, running without it: {exc!r}\n")


_activate()
