"""The one-node test Slurm cluster itself: jobs run, Slurm's own refusals, what a job sees."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slurm


def slurm(cluster, *cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **cluster.env}
    return subprocess.run(list(cmd), env=env, capture_output=True, text=True, timeout=60)


def wait_gone(cluster, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while slurm(cluster, "squeue", "-h", "-j", job_id).stdout.strip():
        assert time.monotonic() < deadline, f"job {job_id} still queued after {timeout}s"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def finished_job(slurm_cluster, tmp_path_factory):
    """A two-task job with one dcu, run to its end: (job id, its output file)."""
    out = tmp_path_factory.mktemp("slurm-out")
    # Each task prints its rank from the venv's Python, so jobs can run this project's code.
    wrap = f'srun {sys.executable} -c \'import os; print("hello-" + os.environ["SLURM_PROCID"])\''
    result = slurm(
        slurm_cluster, "sbatch", "--parsable", "--ntasks=2", "--gres=dcu:1", "-o", f"{out}/out-%j.txt", "--wrap", wrap
    )
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    wait_gone(slurm_cluster, job_id)
    return job_id, out / f"out-{job_id}.txt"


def test_job_runs_both_tasks(finished_job):
    _, output = finished_job
    assert sorted(output.read_text().split()) == ["hello-0", "hello-1"]


def test_ended_job_still_known_to_scontrol(slurm_cluster, finished_job):
    job_id, _ = finished_job
    result = slurm(slurm_cluster, "scontrol", "show", "job", job_id)
    assert result.returncode == 0, result.stderr
    assert "JobState=COMPLETED" in result.stdout


def test_gres_beyond_the_node_is_refused(slurm_cluster):
    result = slurm(slurm_cluster, "sbatch", "--parsable", "--gres=dcu:9", "--wrap", "true")
    print(result.stderr)
    assert result.returncode != 0
    assert "Requested node configuration is not available" in result.stderr


def test_unknown_partition_is_refused(slurm_cluster):
    result = slurm(slurm_cluster, "sbatch", "--parsable", "-p", "nosuch", "--wrap", "true")
    print(result.stderr)
    assert result.returncode != 0
    assert "Invalid partition name specified" in result.stderr


def test_sacct_says_accounting_is_disabled(slurm_cluster, finished_job):
    job_id, _ = finished_job
    result = slurm(slurm_cluster, "sacct", "-j", job_id)
    print(result.returncode, result.stdout, result.stderr)
    # Slurm 22.05 says so on stderr and exits 1.
    assert result.returncode == 1
    assert result.stderr.strip() == "Slurm accounting storage is disabled"
