"""What a Slurm job asks for: the key=value a user adds to ``lfkit run ... --slurm``.

``partition= nodes= gres= cpus_per_task= time= account= qos=`` are sbatch's own
options; ``setup=`` is the line that prepares the environment on the node (the
site script the DCU field guide sources before every command, such as
``source ~/load_torch2.1_py3.sh``); ``master_port=`` fixes the rendezvous port.
Extra ``#SBATCH`` lines come from ``--sbatch``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lfkit.errors import UsageError

KEYS = ("partition", "nodes", "gres", "cpus_per_task", "time", "account", "qos", "setup", "master_port")
_COUNTS = ("nodes", "cpus_per_task")
# gres entries that are accelerators the workers run on (count-only or typed: dcu:4, gpu:a100:8).
DEVICE_GRES = ("gpu", "dcu")
_GRES = re.compile(r"^[A-Za-z][\w.-]*(:[\w.-]+)?(:\d+)?$")


@dataclass
class JobOptions:
    partition: str | None = None
    nodes: int = 1
    gres: str | None = None
    cpus_per_task: int | None = None
    time: str | None = None
    account: str | None = None
    qos: str | None = None
    setup: str | None = None
    master_port: int | None = None
    extra_lines: list[str] = field(default_factory=list)

    @property
    def devices_per_node(self) -> int:
        """Accelerators each node gets from gres (0 without one: the workers run on CPU)."""
        total = 0
        for entry in (self.gres or "").split(","):
            parts = entry.strip().split(":")
            if parts[0] in DEVICE_GRES:
                total += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
        return total

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if v not in (None, [])}


# sbatch --time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, or no limit.
_TIME = re.compile(r"^(?:\d+-\d+(?::\d+){0,2}|\d+(?::\d+){0,2}|unlimited|infinite)$", re.IGNORECASE)


def split(assignments: list[str], extra_lines: list[str] | None = None) -> tuple[list[str], JobOptions]:
    """The Slurm keys out of ``key=value`` items, checked; the rest is the recipe's."""
    rest, given = [], {}
    for item in assignments:
        key, eq, value = item.partition("=")
        if eq and key.strip() in KEYS:
            given[key.strip()] = value.strip()
        else:
            rest.append(item)
    options = JobOptions(extra_lines=[_sbatch_line(line) for line in extra_lines or []])
    for key, value in given.items():
        if key in _COUNTS or key == "master_port":
            if not value.isdigit() or int(value) < 1:
                raise UsageError(f"{key}={value} must be a whole number, 1 or more")
            setattr(options, key, int(value))
        elif key == "gres":
            bad = [e for e in value.split(",") if not _GRES.match(e.strip())]
            if bad:
                raise UsageError(f"gres={value}: expected NAME[:TYPE][:COUNT], such as dcu:4 or gpu:8")
            none = [e.strip() for e in value.split(",") if e.strip().split(":")[-1] == "0"]
            if none:
                raise UsageError(f"gres={value}: {none[0]} asks for no device; give a count of 1 or more")
            options.gres = value
        elif key == "time":
            if not _TIME.match(value):
                raise UsageError(
                    f"time={value}: expected a Slurm time limit such as 90 (minutes), 4:00:00 or 1-12:00:00"
                )
            options.time = value
        elif not value:
            raise UsageError(f"{key}= needs a value")
        else:
            setattr(options, key, value)
    if options.master_port is not None and options.master_port > 65535:
        raise UsageError(f"master_port={options.master_port} must be a TCP port, 1 to 65535")
    return rest, options


def _sbatch_line(line: str) -> str:
    line = line.strip()
    if line.startswith("#SBATCH"):
        line = line[len("#SBATCH") :].strip()
    if not line.startswith("-") or "\n" in line:
        raise UsageError(f"--sbatch {line!r}: expected an sbatch option such as --mem=64G or --exclusive")
    return line
