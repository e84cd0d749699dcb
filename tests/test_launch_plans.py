"""Plans for many workers and for Slurm, checked before anything runs: workers, ZeRO presets,
the job request, the job script, device masks, and how a job's state reads."""

import json
import re
import shlex

import pytest

from conftest import BIN, clean_env, run
from lfkit.errors import UsageError
from lfkit.launching import deepspeed
from lfkit.launching.slurm import jobs, options, script
from lfkit.launching.slurm.node import fix_device_masks

LFKIT = BIN / "lfkit"


def dry_run(model, *args, env=None):
    return run([LFKIT, "run", "sft-lora-single", f"model={model}", "dataset=telecom_demo", "output_dir=/tmp/x",
                *args, "--dry-run"], env=env or clean_env())  # fmt: skip


@pytest.mark.parametrize("preset", deepspeed.PRESETS)
def test_every_preset_passes_deepspeeds_own_schema(preset):
    path = deepspeed.config_path(preset)
    deepspeed.check_config(path, deepspeed.read_config(path), {"per_device_train_batch_size": 4})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}}, "offload_param needs ZeRO stage 3"),
        (
            {"zero_optimization": {"stage": 0, "offload_optimizer": {"device": "cpu"}}},
            "offload_optimizer needs ZeRO stage 1",
        ),
        ({"zero_optimization": {"stage": 7}}, "zero_optimization.stage is 7; ZeRO stages are 0, 1, 2 and 3"),
        (
            {"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}},
            "zero_optimization.offload_param offloads to nvme but gives no nvme_path",
        ),
        (
            {"zero_optimization": {"stage": 2, "no_such_key": 1}},
            "zero_optimization.no_such_key: Extra inputs are not permitted",
        ),
        ({"train_micro_batch_size_per_gpu": 8}, "train_micro_batch_size_per_gpu=8 but per_device_train_batch_size=4"),
    ],
)
def test_a_bad_deepspeed_config_is_one_line(tmp_path, config, message):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config))
    with pytest.raises(UsageError, match=re.escape(message)):
        deepspeed.resolve(str(path), {"per_device_train_batch_size": 4})


def test_a_deepspeed_folder_is_named_as_one(tmp_path):
    with pytest.raises(UsageError, match="is a folder; give a DeepSpeed JSON file or a preset"):
        deepspeed.resolve(str(tmp_path), {})


@pytest.mark.slow
def test_dry_run_of_workers_and_zero(tiny_llama):
    plan = json.loads(dry_run(tiny_llama, "nproc_per_node=2", "deepspeed=z3").stdout)
    step = plan["steps"][0]
    assert step["lfkit_args"]["nproc_per_node"] == 2
    assert step["args"]["deepspeed"] == str(deepspeed.preset_path("z3"))
    for bad, line in [
        (
            ["deepspeed=z9"],
            "lfkit: error: deepspeed=z9: not a preset (z0, z2, z2-offload, z3, z3-offload) nor a JSON file",
        ),
        (["nproc_per_node=0"], "lfkit: error: recipe sft-lora-single, step train: nproc_per_node=0 must be 1 or more"),
        (
            ["nnodes=2", "node_rank=2"],
            "lfkit: error: recipe sft-lora-single, step train: node_rank=2 must be below nnodes=2",
        ),
    ]:
        result = dry_run(tiny_llama, *bad)
        assert (result.returncode, result.stderr.strip().splitlines()) == (2, [line])


@pytest.mark.slow
def test_more_workers_than_devices_is_refused_on_a_gpu_machine(tiny_llama):
    """A simulated machine with one visible GPU (a HIP build that reports one device)."""
    from conftest import REPO

    env = clean_env(PYTHONPATH=str(REPO / "tests" / "sim_site"), LFKIT_TEST_SIMULATE="rocm", LFKIT_TEST_DEVICES="1")
    result = dry_run(tiny_llama, "nproc_per_node=2", env=env)
    assert result.returncode == 2
    # The simulation itself makes torch warn once ("No CUDA runtime is found") as it imports cpp_extension.
    lines = [line for line in result.stderr.strip().splitlines() if "cpp_extension.py" not in line]
    assert lines == [
        "lfkit: error: recipe sft-lora-single, step train: nproc_per_node=2 but only 1 device(s) are visible"
    ]


def test_slurm_keys_come_out_of_the_assignments():
    rest, job = options.split(["model=m", "partition=p", "gres=dcu:4", "nodes=2", "time=1:00:00", "lr=1"], ["--mem=0"])
    assert rest == ["model=m", "lr=1"]
    assert (job.partition, job.gres, job.nodes, job.time, job.extra_lines) == ("p", "dcu:4", 2, "1:00:00", ["--mem=0"])
    assert job.devices_per_node == 4
    assert options.split(["gres=gpu:a100:8"])[1].devices_per_node == 8
    assert options.split(["gres=dcu"])[1].devices_per_node == 1
    assert options.split([])[1].devices_per_node == 0
    for bad in (["nodes=0"], ["nodes=two"], ["gres=dcu:4:x:y"], ["master_port=70000"], ["partition="],
                ["gres=dcu:0"], ["gres=gpu:a100:0"], ["time=-5"], ["time=soon"], ["time=1:2:3:4"]):  # fmt: skip
        with pytest.raises(UsageError):
            options.split(bad)
    for good in ("90", "4:00:00", "1-12", "1-12:00:00", "unlimited"):
        assert options.split([f"time={good}"])[1].time == good
    with pytest.raises(UsageError, match="expected an sbatch option"):
        options.split([], ["mem=0"])


def test_the_job_script_reads_as_a_script(tmp_path):
    _, job = options.split(["partition=debug", "gres=dcu:4", "nodes=2", "setup=source ~/load_torch2.1_py3.sh"])
    text = script.render(tmp_path, "sft-lora-single", job, "/venv/bin/python")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in ("--nodes=2", "--ntasks-per-node=1", "--partition=debug", "--gres=dcu:4", "--requeue",
                      f'--output="{tmp_path}/slurm-%j.out"', "--open-mode=append"):  # fmt: skip
        assert f"#SBATCH {directive}" in lines
    assert "source ~/load_torch2.1_py3.sh" in lines
    assert lines.index("source ~/load_torch2.1_py3.sh") < next(i for i, x in enumerate(lines) if x.startswith("srun"))
    assert 'NODE_RANK="$SLURM_PROCID"' in text and 'NNODES="$SLURM_NTASKS"' in text
    assert f"/venv/bin/python -m lfkit.launching.slurm.node {tmp_path}" in text
    assert "export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))" in text
    fixed = script.render(tmp_path, "r", options.split(["master_port=29555"])[1], "/venv/bin/python")
    assert "export MASTER_PORT=29555" in fixed


def test_job_script_paths_are_quoted_for_sbatch_and_bash(tmp_path):
    out = tmp_path / 'a "b" $c %j 输出 目录'
    text = script.render(out, "r", options.split([])[1], "/venv/bin/python")
    escaped = str(tmp_path) + '/a \\"b\\" $c %%j 输出 目录'
    assert f'#SBATCH --output="{escaped}/slurm-%j.out"' in text.splitlines()
    srun = next(line for line in text.splitlines() if line.startswith("srun"))
    assert shlex.split(shlex.split(srun)[-1])[-3:] == ["-m", "lfkit.launching.slurm.node", str(out)]
    with pytest.raises(UsageError, match="line break"):
        script.render(tmp_path / "a\nb", "r", options.split([])[1], "/venv/bin/python")


def test_rocr_mask_drops_the_second_mask():
    env = {"ROCR_VISIBLE_DEVICES": "2,3", "CUDA_VISIBLE_DEVICES": "2,3", "HIP_VISIBLE_DEVICES": "2,3"}
    assert fix_device_masks(env) == ["CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"]
    assert env == {"ROCR_VISIBLE_DEVICES": "2,3"}
    cuda = {"CUDA_VISIBLE_DEVICES": "2,3"}  # CUDA, or ROCm without Slurm's ROCR mask: left as it is
    assert fix_device_masks(cuda) == [] and cuda == {"CUDA_VISIBLE_DEVICES": "2,3"}


@pytest.mark.parametrize(
    ("record", "state", "expected"),
    [
        ({"status": "submitted"}, "PENDING", "pending"),
        ({"status": "running"}, "RUNNING", "running"),
        ({"status": "running"}, "REQUEUED", "pending"),
        ({"status": "finished"}, "COMPLETED", "finished"),
        ({"status": "finished"}, None, "finished"),  # Slurm forgot the job; run.json says
        ({"status": "interrupted"}, "CANCELLED", "cancelled"),
        ({"status": "interrupted"}, None, "cancelled"),
        ({"status": "submitted", "slurm": {"cancelled": "t"}}, None, "cancelled"),
        ({"status": "running"}, "TIMEOUT", "failed"),
        ({"status": "running"}, "COMPLETED", "failed"),  # the job ended, the run did not
        ({"status": "failed"}, None, "failed"),
        ({"status": "running", "slurm": {"job_id": "7"}}, None, "failed"),  # gone without a word
    ],
)
def test_a_jobs_status_reads_slurm_first_then_run_json(record, state, expected):
    assert jobs.summarize(record, state) == expected


@pytest.mark.slow
def test_a_slurm_dry_run_shows_the_job_and_submits_nothing(tiny_llama, tmp_path):
    """No sbatch needed: nothing is submitted. One worker per dcu of the gres; fp16 auto follows the gres."""
    out = tmp_path / "job"
    env = clean_env(PATH=str(BIN))
    result = run([LFKIT, "run", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo",
                  f"output_dir={out}", "gres=dcu:2", "nodes=2", "--slurm", "--dry-run"], env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert "#SBATCH --gres=dcu:2" in plan["job_script"] and "#SBATCH --nodes=2" in plan["job_script"]
    assert plan["steps"][0]["lfkit_args"]["nproc_per_node"] == 2
    assert plan["steps"][0]["args"]["fp16"] is True
    assert plan["slurm_says"] == "not asked: no sbatch on PATH here"
    assert not out.exists()
