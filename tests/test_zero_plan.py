"""The memory plan of DeepSpeed ZeRO steps (planning/zero.py) against DeepSpeed itself: its defaults, its
own estimators, and the buffers its real engine allocates on DeepSpeed's CPU accelerator with two workers;
and the plan's verdicts against runs that ran or went out of memory (benchmarks/oom_observations.json)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import BIN, FIXTURES, REPO, clean_env, free_port, run

CONFIGS = FIXTURES / "model_configs"
GIB = 2**30


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.both_stacks
def test_the_defaults_the_plan_assumes_are_deepspeeds():
    """A config that leaves a key out gets DeepSpeed's default; the plan must assume the same one."""
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    from lfkit.planning.zero import DEFAULTS, read

    two, three = DeepSpeedZeroConfig(stage=2), DeepSpeedZeroConfig(stage=3)
    theirs = {
        "reduce_bucket_size": two.reduce_bucket_size,
        "allgather_bucket_size": two.allgather_bucket_size,
        "contiguous_gradients": two.contiguous_gradients,
        "stage3_max_live_parameters": three.max_live_parameters,
        "stage3_prefetch_bucket_size": three.prefetch_bucket_size,
        "stage3_param_persistence_threshold": three.param_persistence_threshold,
        "sub_group_size": three.sub_group_size,
    }
    assert DEFAULTS == theirs
    mine2, mine3 = read({"zero_optimization": {"stage": 2}}, 4096), read({"zero_optimization": {"stage": 3}}, 4096)
    assert (mine2.overlap_comm, mine3.overlap_comm) == (two.overlap_comm, three.overlap_comm) == (False, True)
    # "auto" as transformers fills it from the hidden size
    auto = read({"zero_optimization": {"stage": 3, "reduce_bucket_size": "auto",
                 "stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto"}}, 4096)  # fmt: skip
    assert (auto.reduce_bucket, auto.prefetch_bucket, auto.persistence_threshold) == (
        4096**2,
        int(0.9 * 4096**2),
        40960,
    )


@pytest.mark.both_stacks
@pytest.mark.parametrize("workers", [1, 2, 8, 64])
def test_the_model_states_agree_with_deepspeeds_own_estimators(workers):
    """ZeRO-2: parameters, gradients, the float32 master copy and Adam's states are DeepSpeed's
    estimate_zero2_model_states_mem_needs to the byte, with and without offload. ZeRO-3: its estimator
    plus the 16-bit gradient partition the engine also keeps at the step (measured below), with the
    parameters gathered for the largest module and its full gradient (the estimator's 4 x largest layer)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    from lfkit.planning.zero import allocated, read

    total, largest = 6_738_415_616, 131_072_000  # LLaMA-7B, its embedding
    z2 = read({"zero_optimization": {"stage": 2}}, 4096)
    kept = allocated(z2, total, 0, workers, 2, largest)
    assert kept.model_states == estimate_zero2_model_states_mem_needs(total, workers, cpu_offload=False)[1]
    offload = allocated(read({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}, 4096),
                        total, 0, workers, 2, largest)  # fmt: skip
    assert offload.model_states == estimate_zero2_model_states_mem_needs(total, workers, cpu_offload=True)[1]

    no_prefetch = {"stage": 3, "stage3_prefetch_bucket_size": 0, "sub_group_size": 10**12}
    z3 = allocated(read({"zero_optimization": no_prefetch}, 4096), total, 0, workers, 2, largest)
    theirs = estimate_zero3_model_states_mem_needs(
        total, largest, workers, cpu_offload=False, cpu_offload_params=False
    )[1]
    partition = -(-total // workers)
    assert z3.model_states + z3.gathered == theirs + 2 * partition
    both = {**no_prefetch, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}}
    z3_offload = allocated(read({"zero_optimization": both}, 4096), total, 0, workers, 2, largest)
    assert (
        z3_offload.model_states + z3_offload.gathered
        == estimate_zero3_model_states_mem_needs(total, largest, workers, cpu_offload=True, cpu_offload_params=True)[1]
    )


ENGINE_CONFIGS = {
    "z2": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": 20000},
    "z3": {"stage": 3, "overlap_comm": False, "contiguous_gradients": True, "reduce_bucket_size": 20000,
           "sub_group_size": 60000, "stage3_prefetch_bucket_size": 20000, "stage3_param_persistence_threshold": 1000,
           "stage3_max_live_parameters": 1000000},
}  # fmt: skip


# Not on the DCU stack: torch 2.1's gloo has no _allgather_base, which ZeRO-2 and -3 gather through on the CPU.
@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(ENGINE_CONFIGS))
def test_the_real_engine_allocates_what_the_rows_say(stage, tiny_llama, tmp_path):
    """DeepSpeed's engine on its CPU accelerator, two workers, the tiny model in bf16: every tensor alive
    after the backward pass and at the optimizer step, by dtype, beside planning.zero's buffers for the
    same shape and config, in the second step. bf16 after backward: the 16-bit parameters (whole for
    ZeRO-2, the partition for ZeRO-3) and the gradient partition, buckets at most besides; float32 at the
    step: the master copy, Adam's two states and the float32 gradients (the largest sub-group with ZeRO-3)."""
    from lfkit.planning.shapes import model_shape
    from lfkit.planning.zero import allocated, read

    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "bf16": {"enabled": True},
              "zero_allow_untested_optimizer": True, "zero_optimization": ENGINE_CONFIGS[stage]}  # fmt: skip
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    torchrun = BIN / "torchrun"
    worker = REPO / "tests" / "zero_buffers_worker.py"
    result = run([torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), worker, tiny_llama, path, tmp_path / "seen"],
                 env=clean_env(DS_ACCELERATOR="cpu"), timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    shape = model_shape(tiny_llama)
    modules: dict[str, int] = {}
    for t in shape.tensors:
        modules[t.module] = modules.get(t.module, 0) + t.numel
    zero = read(config, shape.hidden)
    persistent = sum(t.numel for t in shape.tensors if t.numel <= zero.persistence_threshold) if stage == "z3" else 0
    plan = allocated(zero, shape.parameters, 0, 2, 2, max(modules.values()), persistent)
    kept = plan.params16 + plan.grads16 + plan.frozen  # ZeRO-3 keeps the small tensors whole
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"seen.{rank}.json").read_text(encoding="utf-8"))
        backward, at_step = seen["after_backward"]["bfloat16"], seen["at_step"]["float32"]
        # DeepSpeed sizes a worker's gradient partition by the tensors it touches, whole: up to one tensor more
        assert kept <= backward <= kept + plan.buckets + 2 * max(modules.values()), (seen, plan)
        assert seen["after_backward"]["float32"] == pytest.approx(plan.master + plan.states, rel=0.001)
        expected = plan.master + plan.states + plan.step_grads32
        if stage == "z3":  # a sub-group closes once it reaches sub_group_size: up to one tensor's partition more
            assert expected <= at_step <= expected + 4 * max(modules.values()) // 2, (seen, plan)
        else:
            assert at_step == pytest.approx(expected, rel=0.001), (seen, plan)
        assert plan.step_grads32 < (plan.master if stage == "z3" else plan.master + 1)


@pytest.mark.both_stacks
def test_every_collected_verdict_is_right():
    """benchmarks/oom_observations.json: runs that ran or went out of memory on a stated card. The plan's
    needed figure fits exactly those that ran, every ZeRO run that died included; the ones it is not held
    to say why."""
    bench = _bench("oom_verdicts")
    points = json.loads(bench.OBSERVATIONS.read_text(encoding="utf-8"))
    rows = [bench.verdict(p) for p in points if bench.held(p)]
    assert len(rows) >= 20
    wrong = [r for r in rows if not r["right"]]
    assert not wrong, wrong
    died_zero = {r["id"] for r in rows if "ZeRO" in r["method"] and r["outcome"] == "oom"}
    assert {"o01", "o23", "o26", "o27"} <= died_zero
    assert {r["id"] for r in rows if "ZeRO" in r["method"] and r["outcome"] == "ran"} >= {"o02", "o24"}
    # the field guide's own verdicts: LoRA of a 7B and the tuned gemma-2b fit 16 GB, full and freeze do not
    assert {r["id"]: r["plan_fits"] for r in rows if r["id"].startswith("g")} == {
        "g01": True, "g02": True, "g03": False, "g04": False}  # fmt: skip
    for point in points:
        assert point["url"] and point["quote"], point["id"]
        if not bench.held(point):
            assert len(point["left_out"]) > 40, point["id"]
    # LLaMA-Factory issue 1221 died allocating Adam's sqrt copy of its 1/8 partition: 3.14 GiB
    o01 = next(p for p in points if p["id"] == "o01")
    assert o01["oom_message"]["tried_gib"] == pytest.approx(4 * 6_738_415_616 / 8 / GIB, abs=0.01)


def test_the_telecom_fine_tune_of_gemma_2b_fits_16_gib_again(tmp_path):
    """The DCU field guide's tuned gemma-2b LoRA (rank 128 on q, k, v with DoRA, micro-batch 8) ran on a
    16 GB card: its plan at cutoff_len 256 fits, and the blocks of earlier batch lengths show only in the
    reading."""
    from lfkit.cli.plan import step_plans
    from lfkit.cli.recipes import plan_for

    model = tmp_path / "gemma-2b"
    model.mkdir()
    (model / "config.json").write_text((CONFIGS / "gemma-2b" / "config.json").read_text(), encoding="utf-8")
    args = [f"model={model}", "dataset=telecom_demo", "lora_target=q_proj,v_proj,k_proj", "cutoff_len=256",
            "gpu_memory=16GiB", "output_dir=/nonexistent/plan-only"]  # fmt: skip
    (step,) = step_plans(plan_for("sft-lora-tuned", args, None))
    assert step.fits is True and step.needed < 16 * GIB < step.reading + 8 * GIB, step.as_dict()
    assert step.estimate.setting.micro_batch == 8 and step.estimate.setting.dora


def test_a_zero_plan_reads_the_steps_own_deepspeed_config(tmp_path):
    """Bucket sizes, overlap_comm and offload come from the step's JSON, not from a fixed guess."""
    from lfkit.planning.memory import estimate
    from lfkit.planning.shapes import model_shape

    shape = model_shape(CONFIGS / "Llama-2-7b-hf")

    def plan(zero: dict):
        path = tmp_path / f"ds{len(list(tmp_path.iterdir()))}.json"
        path.write_text(json.dumps({"zero_optimization": zero}), encoding="utf-8")
        args = {"finetuning_type": "full", "fp16": True, "per_device_train_batch_size": 1, "deepspeed": str(path)}
        return estimate(shape, args, {"nproc_per_node": 8}, 512, "cutoff_len", "gpu", False)

    small = plan({"stage": 2, "reduce_bucket_size": 1e7, "overlap_comm": False})
    large = plan({"stage": 2, "reduce_bucket_size": 5e8, "overlap_comm": True})
    assert small.rows["buckets"] == 2 * 10**7 and large.rows["buckets"] == 2 * 2 * 5 * 10**8
    offload = plan({"stage": 2, "offload_optimizer": {"device": "cpu"}})
    assert offload.rows["optimizer"] == offload.rows["gradients"] == offload.rows["step"] == 0
    assert offload.rows["trainable"] == 2 * shape.parameters  # the whole fp16 model stays on the card
    # at the step: the float32 gradients and AdamW's sqrt copy of the partition, beyond the freed activations
    assert small.rows["step"] == 2 * 4 * (shape.parameters // 8) - small.rows["activations"] - small.rows["logits"]
    assert small.rows["overhead"] == (512 + 1024) * 2**20  # a context, and NCCL / RCCL's buffers with 8 workers
    # a LoRA step allocates the whole reduce buckets too: DeepSpeed sizes them by the config, not the adapter
    lora = estimate(shape, {"finetuning_type": "lora", "fp16": True, "per_device_train_batch_size": 1,
                            "deepspeed": str(tmp_path / "ds1.json")}, {"nproc_per_node": 8}, 512, "x", "gpu", False)  # fmt: skip
    assert lora.rows["buckets"] == 2 * 2 * 5 * 10**8 and lora.parameters["trainable"] < 10**8
    # ZeRO-0 partitions nothing: master copy and Adam's states whole on each of the 8 workers
    zero0 = plan({"stage": 0})
    assert zero0.rows["optimizer"] >= 12 * shape.parameters and zero0.rows["buckets"] == 0
    # ZeRO-3 with LoRA: the full gradient waiting for the reduce is the largest *trained* module's, not the embedding's
    lora3 = estimate(shape, {"finetuning_type": "lora", "lora_target": "q_proj", "bf16": True,
                             "per_device_train_batch_size": 1, "deepspeed": "z3"}, {"nproc_per_node": 8},
                     512, "x", "gpu", False)  # fmt: skip
    full3 = estimate(shape, {"finetuning_type": "full", "bf16": True, "per_device_train_batch_size": 1,
                             "deepspeed": "z3"}, {"nproc_per_node": 8}, 512, "x", "gpu", False)  # fmt: skip
    assert full3.rows["gathered"] - lora3.rows["gathered"] == 2 * (32000 * 4096 - 8 * 4096)  # embedding vs lora_A
