"""Nothing the user made is deleted or mixed: --overwrite, kills, signals, changed data.

Real runs of the real LLaMA-Factory on a tiny model; the kill tests send real
signals to real processes.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import BIN, clean_env, run, signal_run, step_pids, write_alpaca
from lfkit.errors import UsageError

pytestmark = pytest.mark.slow
LFKIT = BIN / "lfkit"
QUICK = ["max_steps=2", "logging_steps=1", "per_device_train_batch_size=2", "cutoff_len=64"]
LONG = ["max_steps=400", "save_steps=5", "logging_steps=5", "per_device_train_batch_size=1", "cutoff_len=64"]


def lfkit(*args, env=None):
    return run([LFKIT, *args], env=env or clean_env())


def record(folder):
    return json.loads((folder / "run.json").read_text(encoding="utf-8"))


@pytest.fixture
def trained(quick_adapter, tiny_llama):
    """A finished LoRA run (an adapter) on a dataset folder of its own (shared with other tests: read only)."""
    return quick_adapter(tiny_llama)


def test_an_input_is_never_an_output_even_with_overwrite(trained, tiny_llama):
    adapter, data = trained
    before = {p.name: p.stat().st_mtime_ns for p in adapter.iterdir()}
    cases = [
        (["eval", f"model={tiny_llama}", f"adapter={adapter}", f"output_dir={adapter}"], "is the adapter"),
        (["run", "merge-lora", f"model={tiny_llama}", f"adapter={adapter}", f"output_dir={tiny_llama}"], "is the model"),
        (["run", "merge-lora", f"model={tiny_llama}", f"adapter={adapter}", f"output_dir={tiny_llama.parent}"],
         "contains the model"),
        (["run", "sft-lora-single", f"model={tiny_llama}", "dataset=tiny_alpaca", f"dataset_dir={data}",
          f"output_dir={data}"], "contains the dataset tiny_alpaca"),
    ]  # fmt: skip
    for argv, relation in cases:
        for flags in ([], ["--overwrite"]):
            result = lfkit(*argv, *flags)
            assert result.returncode == 2, (argv, result.stderr[-2000:])
            (line,) = result.stderr.strip().splitlines()
            assert relation in line and "choose a folder of its own" in line, line
    assert {p.name: p.stat().st_mtime_ns for p in adapter.iterdir()} == before
    assert (tiny_llama / "config.json").is_file() and (data / "tiny_alpaca.json").is_file()


def test_overwrite_removes_only_what_the_run_recorded(tmp_path, tiny_llama):
    data = write_alpaca(tmp_path / "data")
    out = tmp_path / "adapter"
    argv = ["run", "sft-lora-single", f"model={tiny_llama}", "dataset=tiny_alpaca", f"dataset_dir={data}",
            f"output_dir={out}", *QUICK]  # fmt: skip
    assert lfkit(*argv).returncode == 0
    recorded = set(json.loads((out / ".lfkit-outputs.json").read_text())["files"])
    assert {"run.json", "adapter_model.safetensors", "output.log", "llamafactory.yaml"} <= recorded

    (out / "NOTES.txt").write_text("lr 1e-2 looked better")
    dry = lfkit(*argv, "--overwrite", "--dry-run")  # the dry run refuses what the run refuses
    assert dry.returncode == 2 and "holds files lfkit did not record as this run's (NOTES.txt)" in dry.stderr
    refused = lfkit(*argv, "--overwrite")
    assert refused.returncode == 2
    assert "holds files lfkit did not record as this run's (NOTES.txt)" in refused.stderr
    assert (out / "NOTES.txt").is_file() and (out / "adapter_model.safetensors").is_file()

    (out / "NOTES.txt").unlink()
    # a file the run wrote is the run's only while it is as the run wrote it: notes added to its README.md
    readme = out / "README.md"
    written = readme.read_bytes()
    assert "README.md" in recorded
    readme.write_bytes(written + b"\n## my notes\n")
    for flags in (["--overwrite", "--dry-run"], ["--overwrite"]):
        edited = lfkit(*argv, *flags)
        assert edited.returncode == 2, edited.stderr[-2000:]
        (line,) = edited.stderr.strip().splitlines()
        assert line.startswith(f"lfkit: error: output_dir {out}: README.md changed since the run wrote it;"), line
    assert readme.read_bytes().endswith(b"## my notes\n")
    readme.write_bytes(written)  # the same bytes again (a later time): the run's own once more
    again = lfkit(*argv, "--overwrite")
    assert again.returncode == 0, again.stderr[-3000:]
    assert record(out)["status"] == "finished"


def test_what_lfkit_and_slurm_rewrite_after_the_record_stays_the_runs_own(tmp_path):
    """run.json (settled, cancelled) and a Slurm job's log change after the last record; they are the run's
    still, so --overwrite goes on. A file the run wrote and the user changed is refused."""
    from lfkit.recipes import outputs

    root = tmp_path / "run"
    (root / "train").mkdir(parents=True)
    for rel in ("run.json", "train/run.json", "README.md", "slurm-7.out", "train/adapter_model.safetensors"):
        (root / rel).write_text("as written\n")
    outputs.record(root)
    for rel in ("run.json", "train/run.json", "slurm-7.out"):
        (root / rel).write_text("rewritten by lfkit or Slurm, longer than before\n")
    assert {p.name for p in outputs.removal(root)} >= {"run.json", "README.md", "slurm-7.out"}
    (root / "README.md").write_text("as written\n## my notes\n")
    with pytest.raises(UsageError, match=r"README\.md changed since the run wrote it"):
        outputs.removal(root)


def _start(argv, new_session=False):
    return subprocess.Popen([str(a) for a in argv], env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=new_session)  # fmt: skip


def _wait_for(path, process, seconds=300):
    deadline = time.monotonic() + seconds
    while not path.is_file():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_killing_lfkit_kills_its_step_and_the_lock_keeps_a_second_trainer_out(tmp_path, tiny_llama):
    data = write_alpaca(tmp_path / "data")
    out = tmp_path / "adapter"
    # 60 steps, not LONG's 400: the run is frozen while it is looked at, so it cannot end before the
    # kill, and the resume below trains only what is left.
    argv = [LFKIT, "run", "sft-lora-single", f"model={tiny_llama}", "dataset=tiny_alpaca", f"dataset_dir={data}",
            f"output_dir={out}", "max_steps=60", *LONG[1:]]  # fmt: skip
    first = _start(argv, new_session=True)  # its own group: frozen below
    _wait_for(out / "checkpoint-5" / "trainer_state.json", first)
    signal_run(first, out, signal.SIGSTOP)  # lfkit and its step (its own group), holding the lock

    second = run(argv, env=clean_env())
    assert second.returncode == 2
    assert second.stderr.strip().splitlines()[-1].startswith(f"lfkit: error: output_dir {out} has a run in progress")
    dry = run([*argv, "--dry-run"], env=clean_env())  # said it would continue the run in progress
    assert dry.returncode == 2 and dry.stderr.strip().splitlines()[-1] == second.stderr.strip().splitlines()[-1]
    assert (out / ".lfkit.lock").read_text().strip().isdigit()  # the run's pid: the dry-run wrote nothing there

    assert step_pids(out), "the step process should be training"
    signal_run(first, out, signal.SIGCONT)
    first.kill()  # SIGKILL to lfkit alone, not to its process group
    first.communicate()
    deadline = time.monotonic() + 30
    while step_pids(out):
        assert time.monotonic() < deadline, "the step process outlived lfkit"
        time.sleep(0.2)
    steps_then = len((out / "trainer_log.jsonl").read_text().splitlines())
    time.sleep(1)
    assert len((out / "trainer_log.jsonl").read_text().splitlines()) == steps_then  # nobody trains on

    # one answer: the record said "running" until a command looked; status, runs and show agree, and run.json now too
    assert record(out)["status"] == "running"
    status = lfkit("status", out, "--json")
    assert json.loads(status.stdout)["status"] == "interrupted", status.stderr
    assert record(out)["status"] == "interrupted" and record(out)["settled"] == "its process was gone"
    listed = {r["folder"]: r["status"] for r in json.loads(lfkit("runs", tmp_path, "--json").stdout)}
    assert listed[str(out)] == "interrupted"
    assert json.loads(lfkit("show", out, "--json").stdout)["status"] == "interrupted"

    resumed = run(argv, env=clean_env())  # the lock died with both processes
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert record(out)["status"] == "finished" and record(out)["resumed_from"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_marks_the_run_interrupted_with_one_line(sig, tmp_path, tiny_llama):
    data = write_alpaca(tmp_path / "data")
    out = tmp_path / "adapter"
    argv = [LFKIT, "run", "sft-lora-single", f"model={tiny_llama}", "dataset=tiny_alpaca", f"dataset_dir={data}",
            f"output_dir={out}", *LONG]  # fmt: skip
    process = _start(argv)
    _wait_for(out / "checkpoint-5" / "trainer_state.json", process)
    process.send_signal(sig)
    _stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    name = signal.Signals(sig).name
    assert stderr.strip().splitlines()[-1] == (
        f"lfkit: interrupted: stopped by {name} during step train; "
        "run the same command again to resume from its last checkpoint"
    )
    assert record(out)["status"] == "interrupted"
    assert not step_pids(out)
    # what `lfkit show` says of the step: its loss, and that it saved no adapter (checkpoints are not one)
    (step,) = json.loads(lfkit("show", out, "--json").stdout)["steps"]
    assert "adapter in" not in step["result"] and "no adapter saved (the step interrupted)" in step["result"]


def test_a_run_never_resumes_on_changed_data(tmp_path, tiny_llama):
    data = write_alpaca(tmp_path / "data")
    out = tmp_path / "adapter"
    argv = [LFKIT, "run", "sft-lora-single", f"model={tiny_llama}", "dataset=tiny_alpaca", f"dataset_dir={data}",
            f"output_dir={out}", *LONG]  # fmt: skip
    process = _start(argv)
    _wait_for(out / "checkpoint-5" / "trainer_state.json", process)
    process.terminate()
    process.communicate(timeout=60)
    datasets = record(out)["datasets"]
    assert datasets["tiny_alpaca"]["file"] == str(data / "tiny_alpaca.json")
    assert len(datasets["tiny_alpaca"]["sha256"]) == 64

    write_alpaca(data, rows=20)  # the same name, other rows
    again = run(argv, env=clean_env())
    assert again.returncode == 2
    assert "holds an unfinished run with other arguments (dataset tiny_alpaca changed since the run started" in (
        again.stderr
    )


def test_a_failed_step_prints_the_lines_that_name_the_error(tmp_path, tiny_llama):
    data = write_alpaca(tmp_path / "data")
    out = tmp_path / "adapter"
    # wandb is not installed: transformers fails once the model has loaded
    result = lfkit("run", "sft-lora-single", f"model={tiny_llama}", "dataset=tiny_alpaca", f"dataset_dir={data}",
                   f"output_dir={out}", "report_to=wandb", *QUICK)  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "lfkit: error: step train (train) failed with exit code 1"
    assert any("WandbCallback requires wandb to be installed" in line for line in lines[1:-1]), lines
    assert lines[-1] == f"  full log: {out / 'output.log'}"
    assert "Traceback" in (out / "output.log").read_text()
    assert record(out)["status"] == "failed"


def test_a_step_whose_log_cannot_be_written_still_runs_to_its_end(tmp_path):
    """On a full disk the copier of the step's output died with a traceback and stopped draining the pipe:
    the step then blocked on its next write, for ever. /dev/full gives the kernel's own ENOSPC."""
    from lfkit.recipes.step_process import StepProcess

    lines = "import sys\nfor i in range(3000): print(f'line {i} ' + 'x' * 90)\nsys.exit(3)"
    (tmp_path / "output.log").symlink_to("/dev/full")
    started = time.monotonic()
    step = StepProcess([sys.executable, "-c", lines], tmp_path, echo=False)
    assert step.wait() == 3
    assert time.monotonic() - started < 60
    assert step.seen.lost is not None and step.seen.lost.errno == errno.ENOSPC
    assert step.seen.tail.decode().rstrip().endswith("line 2999 " + "x" * 90)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root only): a disk that really fills."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("free_kib", [300, 100, 20])
def test_a_run_on_a_full_disk_ends_in_lines_not_tracebacks(free_kib, small_disk, tiny_llama):
    """The disk fills at a different point for each size (the step's checkpoint, its log, run.json): each ends
    with lfkit's lines, exit 1, no traceback of lfkit's own, and nothing claims an adapter that is not there."""
    total = os.statvfs(small_disk)
    (small_disk / "fill").write_bytes(b"\0" * (total.f_bavail * total.f_frsize - free_kib * 1024))
    out = small_disk / "run"
    result = lfkit("run", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo", f"output_dir={out}",
                   *QUICK, "save_steps=1")  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert all(line.startswith(("lfkit: ", "  ")) for line in result.stderr.strip().splitlines()), result.stderr
    assert "No space left on device" in result.stderr
    shown = lfkit("show", out, "--json")
    if shown.returncode == 0:  # run.json was written before the disk filled
        (step,) = json.loads(shown.stdout)["steps"]
        assert step["status"] in ("failed", "interrupted") and "no adapter saved" in step["result"], step


def test_a_multi_step_run_killed_before_its_first_record_keeps_its_run_json_its_own(tmp_path):
    """Killed after writing its run.json, before any step recorded its files: the run continued took that
    run.json for the user's, and --overwrite then refused the finished run for ever (seen on a sweep's
    variant when the kill fell there)."""
    from lfkit.recipes import outputs

    (tmp_path / "train").mkdir()
    (tmp_path / "run.json").write_text(json.dumps({"recipe": "demo", "status": "running"}))
    (tmp_path / "notes.txt").write_text("mine")
    outputs.keep_user_files(tmp_path, [tmp_path / "train"])
    assert outputs.read_manifest(tmp_path)["user_files"] == ["notes.txt"]
    (tmp_path / "notes.txt").unlink()
    outputs.record(tmp_path)
    assert tmp_path / "run.json" in outputs.removal(tmp_path)  # the run's own: --overwrite may replace it
