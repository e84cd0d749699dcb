"""Yes/no values as LLaMA-Factory and lfkit's environment switches read them.

One reading for every place that asks: an argument given as a string on the command line
(``bf16=true``, HfArgumentParser's ``string_to_bool`` words) and an ``LFKIT_*`` variable (``1``,
``on``) mean the same in the plan, the patches and the plugins as in the run itself.
"""

from __future__ import annotations

import os
from typing import Any

YES = frozenset({"true", "t", "yes", "y", "1", "on"})
NO = frozenset({"false", "f", "no", "n", "0", "off"})


def truthy(value: Any) -> bool:
    return value is True or (not isinstance(value, bool) and str(value).strip().lower() in YES)


def env_flag(name: str) -> bool:
    return truthy(os.environ.get(name, ""))
