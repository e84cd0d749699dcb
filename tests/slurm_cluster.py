"""A real one-node Slurm cluster (munged + slurmctld + slurmd) living in a temp folder.

Everything it needs (key, configs, sockets, state, logs, pid files) stays in that folder and it
listens on ports picked free at start, so two test sessions on one machine do not clash.
Run as root: the daemons run as root (SlurmUser=root) and munged trusts only its owner's key.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from conftest import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
TOOLS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
# Credential lifetime (default 120 s); a requeued job also waits this long (+1 s) before it may run again.
CRED_EXPIRE = 10


def which(name: str) -> str | None:
    # The daemons live in sbin, which a login PATH may lack.
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def unavailable_reason() -> str | None:
    """Why no cluster can be started here, or None when one can."""
    missing = [name for name in DAEMONS + TOOLS if which(name) is None]
    if missing:
        return f"Slurm/munge not installed (missing {', '.join(missing)}; see scripts/install-test-tools.sh)"
    if os.geteuid() != 0:
        return "the test Slurm cluster runs its daemons as root; not root here"
    return None


def real_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) // 1024
            # Leave room for the OS so slurmd never reports less than the config and drains itself.
            return max(total - 1024, total // 2)
    raise RuntimeError("no MemTotal in /proc/meminfo")


class SlurmCluster:
    def __init__(self, folder: Path, *, start_timeout: float = 30.0):
        self.folder = Path(folder)
        self.start_timeout = start_timeout
        self.name = "t" + uuid.uuid4().hex[:10]
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.folder / "slurm.conf"
        self.munge_socket = self.folder / "munge" / "munge.socket"
        self.pid_files = {name: self.folder / "run" / f"{name}.pid" for name in DAEMONS}
        self.logs = {name: self.folder / "log" / f"{name}.log" for name in DAEMONS}
        self.env = {"SLURM_CONF": str(self.conf)}

    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _write_files(self) -> None:
        # munged and slurmd put unix sockets in here; their paths must fit sun_path (108 bytes).
        if len(str(self.folder)) > 80:
            raise RuntimeError(f"Slurm cluster folder path too long for unix sockets: {self.folder}")
        # Every start is a fresh cluster: old state would hold another ClusterName, which slurmctld refuses.
        for sub in ("state", "spool"):
            shutil.rmtree(self.folder / sub, ignore_errors=True)
        for sub in ("munge", "run", "log", "state", "spool"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        key = self.folder / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        f = self.folder
        self.conf.write_text(
            f"""\
ClusterName={self.name}
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire={CRED_EXPIRE}
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool
SlurmctldPidFile={self.pid_files["slurmctld"]}
SlurmdPidFile={self.pid_files["slurmd"]}
SlurmctldLogFile={self.logs["slurmctld"]}
SlurmdLogFile={self.logs["slurmd"]}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
# Re-scan pending jobs every 2 s (defaults 30/60 s), so a requeued job starts soon after it may.
SchedulerParameters=bf_interval=2,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=dcu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
# The default, spelled out: `scontrol requeue` works on any job not submitted with --no-requeue.
JobRequeue=1
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={len(os.sched_getaffinity(0))} RealMemory={real_memory_mb()} Gres=dcu:2 State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )
        (f / "gres.conf").write_text(f"NodeName={self.node} Name=dcu Count=2\n")

    def start(self) -> SlurmCluster:
        try:
            self._write_files()
            self._launch(
                "munged",
                "--force",
                f"--key-file={self.folder / 'munge' / 'munge.key'}",
                f"--socket={self.munge_socket}",
                f"--pid-file={self.pid_files['munged']}",
                f"--log-file={self.logs['munged']}",
                f"--seed-file={self.folder / 'munge' / 'munged.seed'}",
            )
            self._launch("slurmctld", "-f", str(self.conf))
            self._launch("slurmd", "-f", str(self.conf))
            self._wait_idle()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, daemon: str, *args: str) -> None:
        # Each daemon forks into the background and writes its pid file; wait for that file so
        # stop() can always find it, even when a later step fails.
        result = subprocess.run(
            [which(daemon) or daemon, *args], env=self._env(), capture_output=True, text=True, timeout=30
        )
        if result.returncode != 0:
            raise RuntimeError(f"{daemon} failed to start: {result.stderr.strip()}\n{self.log_tails()}")
        deadline = time.monotonic() + 10
        while self._pid(daemon) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{daemon} wrote no pid file\n{self.log_tails()}")
            time.sleep(0.05)

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        state = ""
        while time.monotonic() < deadline:
            result = self.run("sinfo", "-h", "-o", "%t")
            state = (result.stdout + result.stderr).strip()
            if result.returncode == 0 and state == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(
            f"Slurm node not idle after {self.start_timeout:.0f}s (sinfo: {state!r})\n{self.log_tails()}"
        )

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a Slurm command against this cluster."""
        return subprocess.run(list(cmd), env=self._env(), capture_output=True, text=True, timeout=timeout)

    def _pid(self, daemon: str) -> int | None:
        try:
            return int(self.pid_files[daemon].read_text().strip())
        except (OSError, ValueError):
            return None

    def log_tails(self, lines: int = 15) -> str:
        out = []
        for log in self.logs.values():
            text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else ["(no log)"]
            out.append(f"--- {log.name} ---\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self) -> None:
        """Cancel jobs, stop the daemons (SIGTERM, SIGKILL after a few seconds), kill leftovers.

        Safe to call twice, and after a start() that failed half-way.
        """
        if self._pid("slurmctld"):
            try:
                self.run("scancel", "--full", "--user=root", timeout=10)
                # Give jobs a moment to end on SIGTERM; the sweep below kills the rest.
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and self.run("squeue", "-h", timeout=5).stdout.strip():
                    time.sleep(0.2)
            except (OSError, subprocess.SubprocessError):
                pass
        for daemon in ("slurmd", "slurmctld", "munged"):
            pid = self._pid(daemon)
            if pid is not None and self._ours(pid):
                _terminate(pid)
            self.pid_files[daemon].unlink(missing_ok=True)
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        # slurmstepd and job tasks outlive slurmd by design, and a daemon may have died before
        # writing its pid file. All of them inherited SLURM_CONF=<our conf>: that finds them.
        spared = _ancestors()
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) not in spared and self._ours(int(proc.name)):
                try:
                    os.kill(int(proc.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _ours(self, pid: int) -> bool:
        """Whether pid carries this cluster's SLURM_CONF (so a stale pid file never hits a stranger)."""
        try:
            return f"SLURM_CONF={self.conf}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False


def _ancestors() -> set[int]:
    """This process and its parents: they may carry our SLURM_CONF too, and must live."""
    pids, pid = set(), os.getpid()
    while pid > 0 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by init) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _terminate(pid: int, grace: float = 5.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
