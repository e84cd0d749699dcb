"""Imported by lfkit-autoload.pth at interpreter start; its presence in sys.modules
tells `lfkit doctor` that this process was activated by the .pth file."""

import lfkit  # noqa: F401  (importing activates)
