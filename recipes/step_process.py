"""Starting a step's process and stopping it: it never outlives lfkit, and its log is kept.

- The step runs in a process group of its own, so a stop reaches it and everything it
  started (torchrun and its workers) at once; it also dies when lfkit dies, even by
  SIGKILL (``PR_SET_PDEATHSIG``, set in the step process itself).
- It inherits the run folder's lock, so no second run can write into that folder
  while either process lives.
- Its stdout and stderr go to ``STEP/output.log``, and to the terminal only when asked
  (``lfkit run -v``); an interactive chat keeps the terminal itself (it reads from it).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

LOG_FILE = "output.log"
PARENT_ENV = "LFKIT_PARENT_PID"
STOP_GRACE_SECONDS = 20


class Stopped(KeyboardInterrupt):
    """lfkit was asked to stop (Ctrl-C, SIGTERM, SIGHUP) while a step ran."""


def _raise_stopped(signum, _frame):
    raise Stopped(signal.Signals(signum).name)


class stop_signals:
    """Turn SIGTERM and SIGHUP into Stopped and SIGINT into KeyboardInterrupt, in the main thread."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __enter__(self):
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
                    continue  # started under nohup: the terminal closing must not stop the run
                self.previous[sig] = signal.signal(sig, _raise_stopped)
            # A shell starts a background job with SIGINT ignored, and the step would inherit that;
            # `kill -INT` must still stop the run the way Ctrl-C does.
            self.previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


TAIL_BYTES = 64 * 1024  # the end of a step's output, kept in memory for its error lines


class Copy:
    """What the copier saw: the end of the output, and why the log stopped being written (if it did)."""

    def __init__(self) -> None:
        self.tail = bytearray()
        self.lost: OSError | None = None

    def keep(self, chunk: bytes) -> None:
        self.tail += chunk
        del self.tail[:-TAIL_BYTES]


def _copy(source, log_path: Path, echo: bool, seen: Copy) -> None:
    """Drain the step's output into its log (and the terminal when asked) until the step closes it.
    The pipe is drained to the end whatever happens to the log: a step whose reader stopped would
    block on its next write for ever (a full disk did that)."""
    out = sys.stdout.buffer if echo else None
    log = _open_log(log_path, seen)
    try:
        while True:
            chunk = os.read(source.fileno(), 65536)
            if not chunk:
                break
            seen.keep(chunk)
            if log is not None:
                try:
                    log.write(chunk)
                    log.flush()
                except OSError as exc:
                    _log_lost(log_path, exc, seen)
                    with contextlib.suppress(OSError):
                        log.close()  # what it still holds cannot be written either
                    log = None
            if out is not None:
                try:
                    out.write(chunk)
                    out.flush()
                except (OSError, ValueError):
                    out = None  # a closed terminal must not stop the log
    finally:
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()


def _open_log(log_path: Path, seen: Copy):
    try:
        return open(log_path, "ab")
    except OSError as exc:
        _log_lost(log_path, exc, seen)
        return None


def _log_lost(log_path: Path, exc: OSError, seen: Copy) -> None:
    seen.lost = exc
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(
            f"lfkit: warning: {log_path}: {exc.strerror or exc}; the step's output from here on is not kept\n"
        )
        sys.stderr.flush()


class StepProcess:
    def __init__(
        self,
        argv: list[str],
        folder: Path,
        keep_fds: tuple[int, ...] = (),
        interactive: bool = False,
        extra_env: dict[str, str] | None = None,
        log_name: str = LOG_FILE,
        echo: bool = True,
    ):
        self.folder, self.interactive = folder, interactive
        env = {**os.environ, **(extra_env or {}), PARENT_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        self.log = folder / log_name
        self.copier = None
        self.seen = Copy()
        if interactive:
            self.proc = subprocess.Popen(argv, env=env, pass_fds=keep_fds)
            return
        self.proc = subprocess.Popen(
            argv, env=env, pass_fds=keep_fds, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.copier = threading.Thread(target=_copy, args=(self.proc.stdout, self.log, echo, self.seen), daemon=True)
        self.copier.start()

    def wait(self, poll=None, interval: float = 1.0) -> int:
        """The exit code; ``poll()`` is called every ``interval`` seconds while the step runs."""
        while poll is not None:
            try:
                self.proc.wait(timeout=interval)
                break
            except subprocess.TimeoutExpired:
                poll()
        code = self.proc.wait()
        if self.copier is not None:
            self.copier.join()
        return code

    def stop(self) -> None:
        """SIGTERM to the step and all it started, SIGKILL after a grace period."""
        for sig, grace in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 5)):
            try:
                if self.interactive:
                    self.proc.send_signal(sig)
                else:
                    os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.copier is not None:
            self.copier.join(timeout=5)


# --- in the step process -----------------------------------------------------------


def die_with_parent() -> None:
    """Called first thing in a step process: end when lfkit ends, and take the whole group along."""
    parent = os.environ.get(PARENT_ENV)
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if parent and os.getppid() != int(parent):
        os._exit(143)  # lfkit died before the line above took effect
    if os.getpgrp() == os.getpid():

        def end_group(_signum, _frame):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.killpg(0, signal.SIGTERM)

        signal.signal(signal.SIGTERM, end_group)


# --- reading a failed step's log -------------------------------------------------------

_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+)')


def error_lines(log: Path, limit: int = 4, text: str | None = None) -> list[str]:
    """The lines of a step's log (or of ``text``, its end, where the log could not be written) that
    name its error: lfkit's own error lines, or the last traceback's exception and its nearest frame
    outside the Python libraries."""
    if text is None:
        try:
            text = log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
    lines = [line.rstrip() for line in text.replace("\r", "\n").splitlines()]
    own = [line for line in lines if line.startswith("lfkit: error:")]
    if own:
        return own[-limit:]
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return [line for line in lines if line.strip()][-limit:]
    block = lines[starts[-1] + 1 :]
    frames = [i for i, line in enumerate(block) if _FRAME.match(line)]
    after = block[frames[-1] + 1 :] if frames else block
    exception = next((line for line in after if line and not line.startswith(" ")), "")
    user_frames = [block[i].strip() for i in frames if "-packages" not in block[i] and "/lib/python" not in block[i]]
    nearest = user_frames[-1:] or [block[frames[-1]].strip()] if frames else []
    return [*nearest, exception] if exception else nearest
