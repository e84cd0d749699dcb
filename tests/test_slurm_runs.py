"""`lfkit run/sweep ... --slurm`, `lfkit status/logs/cancel` on a real one-node Slurm cluster.

The cluster (tests/slurm_cluster.py) has a count-only ``dcu`` gres, so a job asks for
dcu:1 as it would on a DCU cluster while the training runs on the CPU. Two srun tasks
on the one host stand in for two nodes: node ranks 0 and 1 meet at the first host of
the allocation, as they would across a real cluster.
"""

import json
import shlex
import subprocess
import time

import pytest

from conftest import BIN, clean_env, run

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
LFKIT = BIN / "lfkit"
QUICK = ["model=tiny:llama", "dataset=telecom_demo", "template=default", "fp16=false", "logging_steps=1",
         "per_device_train_batch_size=2", "gradient_accumulation_steps=1", "cutoff_len=64"]  # fmt: skip
ENDED = ("finished", "failed", "cancelled")


@pytest.fixture
def env(slurm_cluster):
    return clean_env(**slurm_cluster.env)


def lfkit(env, *args, timeout=600):
    return run([LFKIT, *args], env=env, timeout=timeout)


def status(env, folder) -> dict:
    result = lfkit(env, "status", folder, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_until(env, folder, states=ENDED, timeout=600, job=None) -> dict:
    """The run's status once it is one of ``states`` (for ``job``, when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = status(env, folder)
        if info["status"] in states and job in (None, info["job_id"]):
            return info
        time.sleep(2)
    raise AssertionError(f"{folder} still {info} after {timeout}s")


def submit(env, out, *extra, recipe="sft-lora-single"):
    result = lfkit(env, "run", recipe, *QUICK, f"output_dir={out}", *extra, "--slurm")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    record = json.loads((out / "run.json").read_text())
    assert f"submitted job {record['slurm']['job_id']}" in result.stdout
    # the hint's commands paste into a shell as they are printed, whatever the folder's name holds
    (hint,) = [line for line in result.stdout.splitlines() if "follow it:" in line]
    status_cmd, logs_cmd = hint.split("follow it:", 1)[1].split("  |  ")
    assert shlex.split(status_cmd) == ["lfkit", "status", str(out)], hint
    assert shlex.split(logs_cmd) == ["lfkit", "logs", "-f", str(out)], hint
    return record["slurm"]["job_id"]


def test_a_slurm_dry_run_asks_slurm_what_the_submission_would(env, tmp_path):
    """sbatch --test-only submits nothing: a partition the cluster lacks passed the dry-run, then the submission
    was refused."""
    out = tmp_path / "asked"
    fine = lfkit(env, "run", "sft-lora-single", *QUICK, f"output_dir={out}", "--slurm", "--dry-run")
    assert fine.returncode == 0, fine.stderr
    assert json.loads(fine.stdout)["slurm_says"] == "sbatch --test-only accepts the job"
    refused = lfkit(env, "run", "sft-lora-single", *QUICK, f"output_dir={out}", "partition=nope", "--slurm",
                    "--dry-run")  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("lfkit: error: Slurm refused the job: ")
    assert not out.exists()


@pytest.mark.both_stacks
def test_lora_train_followed_to_the_end(env, tmp_path):
    # a folder with what a job script must quote: spaces, Chinese, quotes, $ and Slurm's own %
    out = tmp_path / '输出 目录 it\'s "q" $HOME %j' / "run"
    job = submit(env, out, "max_steps=3", "gres=dcu:1", "--sbatch=--comment=lfkit-test")
    script = (out / "job.sbatch").read_text()
    assert "#SBATCH --gres=dcu:1" in script and "#SBATCH --comment=lfkit-test" in script
    assert status(env, out)["status"] in ("pending", "running", "finished")

    follow = lfkit(env, "logs", "-f", out)  # returns when the job has ended
    assert follow.returncode == 0, follow.stderr
    assert "lfkit: sft-lora-single finished" in follow.stdout
    info = status(env, out)
    assert (info["status"], info["job_id"]) == ("finished", job)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["slurm"]["job_id"] == job
    assert record["plan"]["train"]["lfkit_args"]["nproc_per_node"] == 1  # one worker per dcu asked for
    assert (out / "adapter_model.safetensors").is_file()
    # A finished run stays untouched: submitting again is refused.
    again = lfkit(env, "run", "sft-lora-single", *QUICK, f"output_dir={out}", "max_steps=3", "--slurm")
    assert again.returncode == 2 and "holds a finished run" in again.stderr


def test_two_tasks_on_one_host_train_as_two_nodes(env, tmp_path, slurm_cluster):
    """The job script run by hand with two tasks on the one node: NODE_RANK 0 and 1, one worker each."""
    out = tmp_path / "two-nodes"
    held = submit(env, out, "max_steps=3", "--sbatch=--hold")
    assert lfkit(env, "cancel", out).returncode == 0
    assert status(env, out)["status"] == "cancelled"
    by_hand = subprocess.run(
        ["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", out / "job.sbatch"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    job = by_hand.stdout.strip()
    subprocess.run(["scontrol", "release", job], env=env, check=True)  # the script holds itself (--hold)
    # run.json names the new job once its node 0 starts (a job submitted by hand is news to lfkit until then)
    info = wait_until(env, out, job=job)
    log = (out / f"slurm-{job}.out").read_text()
    assert info["status"] == "finished", log[-3000:]
    assert info["job_id"] == job and job != held
    assert "node 0 of 2" in log and "node 1 of 2" in log
    record = json.loads((out / "run.json").read_text())
    assert [(w["rank"], w["node_rank"]) for w in record["workers"]] == [(0, 0), (1, 1)]
    assert (out / "output-node1.log").is_file()


def test_cancel_then_resume_from_the_last_checkpoint(env, tmp_path):
    out = tmp_path / "resume"
    args = ("max_steps=120", "save_steps=5")
    submit(env, out, *args)
    deadline = time.monotonic() + 300
    while not list(out.glob("checkpoint-*/trainer_state.json")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert list(out.glob("checkpoint-*")), (out / "output.log").read_text()[-2000:]
    cancelled = lfkit(env, "cancel", out)
    assert cancelled.returncode == 0, cancelled.stderr
    info = wait_until(env, out)
    assert info["status"] == "cancelled", info
    # the same word in run.json and in every command (run.json said "interrupted" where runs said "cancelled")
    assert json.loads((out / "run.json").read_text())["status"] == "cancelled"
    listed = json.loads(lfkit(env, "runs", out.parent, "--json").stdout)
    assert [r["status"] for r in listed if r["folder"] == str(out)] == ["cancelled"]
    shown = json.loads(lfkit(env, "show", out, "--json").stdout)
    assert shown["status"] == "cancelled" and [s["status"] for s in shown["steps"]] == ["cancelled"]

    result = lfkit(env, "run", "sft-lora-single", *QUICK, f"output_dir={out}", *args, "--slurm")
    assert result.returncode == 0, result.stderr
    info = wait_until(env, out)
    record = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished", (out / "output.log").read_text()[-3000:]
    assert record["resumed_from"] and "checkpoint-" in record["resumed_from"]
    assert len(record["slurm"]["jobs"]) == 2
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 120


def test_sweep_submits_one_job_per_variant_and_collects(env, tmp_path):
    out = tmp_path / "sweep"
    sweep = ["sweep", "sft-lora-single", *QUICK, "max_steps=2", "max_samples=8", "eval.max_new_tokens=8",
             "eval.max_samples=8", "--grid", "learning_rate=1e-3,2e-3", "--eval", "telecom_demo_test", "-o", out,
             "--slurm"]  # fmt: skip
    first = lfkit(env, *sweep)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count(": job ") == 2
    for variant in ("learning_rate=1e-3", "learning_rate=2e-3"):
        assert wait_until(env, out / variant)["status"] == "finished"
    collected = lfkit(env, *sweep)
    assert collected.returncode == 0, collected.stderr
    record = json.loads((out / "sweep.json").read_text())
    assert record["status"] == "finished"
    assert sorted(row["variant"] for row in record["results"]) == ["learning_rate=1e-3", "learning_rate=2e-3"]
    assert (out / "comparison.csv").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["partition=nosuch"],
            "lfkit: error: Slurm refused the job: invalid partition specified: nosuch; "
            "allocation failure: Invalid partition name specified",
        ),
        (
            ["gres=dcu:9"],
            "lfkit: error: Slurm refused the job: allocation failure: Requested node configuration is not available",
        ),
        (["nodes=0"], "lfkit: error: nodes=0 must be a whole number, 1 or more"),
        (["gres=dcu"], None),  # a sound request, for the no-sbatch case below
    ],
)
def test_bad_requests_are_one_line_and_write_nothing(env, tmp_path, tiny_llama, extra, message):
    out = tmp_path / "bad"
    if message is None:  # no sbatch on PATH
        env = {**env, "PATH": str(BIN)}
        message = "lfkit: error: no sbatch on PATH: run --slurm on a Slurm login node (or load its slurm module)"
    # The session's tiny model, built already: a first `tiny:llama` prints the build's progress.
    model = f"model={tiny_llama}"
    result = lfkit(env, "run", "sft-lora-single", *QUICK, model, f"output_dir={out}", *extra, "--slurm")
    assert (result.returncode, result.stderr.strip().splitlines()) == (2, [message])
    assert not out.exists()


def test_an_interactive_chat_cannot_be_a_batch_job(env, tmp_path, tiny_llama):
    out = tmp_path / "c"
    result = lfkit(env, "run", "chat", f"model={tiny_llama}", "template=default", f"output_dir={out}", "--slurm")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "lfkit: error: recipe chat: step chat is an interactive chat, which cannot run in a batch job "
        "(give prompt=... for a one-shot answer)"
    ]
    assert not out.exists()
