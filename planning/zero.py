"""DeepSpeed ZeRO as its engine allocates it, per worker, from the step's DeepSpeed config.

What the engine holds (read in deepspeed/runtime/zero/stage_1_and_2.py and stage3.py, and
measured on its CPU accelerator by tests/test_zero_buffers.py), for T trainable and F frozen
values over N workers, c bytes per half-precision value:

- ZeRO-1/2: every trainable parameter whole, in one flat half-precision buffer (c*T); the
  gradients of this worker's partition (c*T/N; ZeRO-1 keeps them whole, c*T); reduce buckets
  of ``reduce_bucket_size`` values (two with ``overlap_comm``) while the backward pass runs;
  the float32 master partition and the optimizer's states (4*T/N + 8*T/N for Adam); at the
  optimizer step, the partition's gradients in float32 (4*T/N).
- ZeRO-3: parameters partitioned too (c*(T+F)/N), except those of at most
  ``stage3_param_persistence_threshold`` values, kept whole; the parameters gathered for the
  module in use and those prefetched (``stage3_prefetch_bucket_size``, at most
  ``stage3_max_live_parameters``) and the full gradient of the largest module before it is
  reduced; the float32 gradients at the step come one sub-group (``sub_group_size``) at a time.
- ZeRO-0 partitions nothing: DeepSpeed's bf16 / fp16 optimizer keeps every state whole.
- Offload moves the master copy, the states and the float32 gradients (optimizer) or the
  parameter partitions (param) to CPU memory.

Torch's AdamW, which LLaMA-Factory hands DeepSpeed unless the config names an optimizer,
computes ``exp_avg_sq.sqrt()`` over the whole flat partition at the step: one more float32
copy of it (LLaMA-Factory issue 1221 died there, allocating exactly that 3.14 GiB).

DeepSpeed's own estimators (``estimate_zero2_model_states_mem_needs``,
``estimate_zero3_model_states_mem_needs``) count the same model states; the test holds
the agreement (ZeRO-3: the engine also keeps the 16-bit gradient partition at the step,
which its estimator leaves out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# DeepSpeed's defaults (deepspeed.runtime.zero.config.DeepSpeedZeroConfig), for keys a config leaves out;
# tests/test_zero_buffers.py holds them equal to the installed DeepSpeed's.
DEFAULTS = {
    "reduce_bucket_size": 500_000_000,
    "allgather_bucket_size": 500_000_000,
    "contiguous_gradients": True,
    "stage3_max_live_parameters": 1_000_000_000,
    "stage3_prefetch_bucket_size": 50_000_000,
    "stage3_param_persistence_threshold": 100_000,
    "sub_group_size": 1_000_000_000,
}


@dataclass(frozen=True)
class ZeroConfig:
    stage: int
    reduce_bucket: int  # values
    overlap_comm: bool
    contiguous_gradients: bool
    max_live_parameters: int
    prefetch_bucket: int
    persistence_threshold: int
    sub_group_size: int
    offload_optimizer: bool
    offload_param: bool
    named_optimizer: bool  # the config's own "optimizer" (DeepSpeed's fused Adam: no sqrt copy)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _number(value: Any, fallback: int) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return fallback


def _offloaded(section: dict[str, Any], key: str) -> bool:
    part = section.get(key)
    return isinstance(part, dict) and str(part.get("device", "none")).lower() in {"cpu", "nvme"}


def read(config: dict[str, Any], hidden: int) -> ZeroConfig:
    """The ZeRO settings of a whole DeepSpeed config; "auto" as transformers fills it from the model's
    hidden size (integrations/deepspeed.py: reduce_bucket_size h*h, prefetch 0.9*h*h, persistence 10*h)."""
    zero = config.get("zero_optimization") or {}
    stage = _number(zero.get("stage", 0), 0)

    def value(key: str, auto: int) -> int:
        given = zero.get(key, DEFAULTS[key])
        return auto if given == "auto" else _number(given, DEFAULTS[key])

    overlap = zero.get("overlap_comm")
    return ZeroConfig(
        stage=stage,
        reduce_bucket=value("reduce_bucket_size", hidden * hidden),
        overlap_comm=stage == 3 if overlap in (None, "auto") else bool(overlap),
        contiguous_gradients=bool(zero.get("contiguous_gradients", DEFAULTS["contiguous_gradients"])),
        max_live_parameters=value("stage3_max_live_parameters", DEFAULTS["stage3_max_live_parameters"]),
        prefetch_bucket=value("stage3_prefetch_bucket_size", int(0.9 * hidden * hidden)),
        persistence_threshold=value("stage3_param_persistence_threshold", 10 * hidden),
        sub_group_size=value("sub_group_size", DEFAULTS["sub_group_size"]),
        offload_optimizer=_offloaded(zero, "offload_optimizer"),
        offload_param=_offloaded(zero, "offload_param"),
        named_optimizer=isinstance(config.get("optimizer"), dict),
    )


@dataclass(frozen=True)
class ZeroBytes:
    """Bytes per worker on the device, by what holds them."""

    frozen: int  # frozen parameters (LoRA's base): whole, or partitioned with ZeRO-3
    params16: int  # the trainable parameters in half precision (flat buffer or partition)
    grads16: int  # half-precision gradients (the partition with ZeRO-2/3)
    buckets: int  # reduce buckets, during the backward pass
    gathered: int  # ZeRO-3: parameters gathered for the modules in use, and one module's full gradient
    master: int  # float32 master copy of the partition
    states: int  # the optimizer's states of the partition
    step_grads32: int  # the partition's gradients in float32, at the optimizer step
    step_scratch: int  # torch AdamW's sqrt copy of the partition at the step

    @property
    def model_states(self) -> int:
        """What DeepSpeed's estimators count: parameters, gradients and optimizer, nothing transient
        but the float32 gradients."""
        return self.params16 + self.grads16 + self.master + self.states + self.step_grads32


def allocated(
    zero: ZeroConfig,
    trainable: int,
    frozen: int,
    workers: int,
    half_bytes: int,
    largest_module: int,
    persistent: int = 0,
    optimizer_states: int | None = None,
    frozen_bytes_whole: int | None = None,
    largest_trained_module: int | None = None,
) -> ZeroBytes:
    """``trainable`` / ``frozen``: values; ``half_bytes``: bytes per value of the model as DeepSpeed casts
    it (4 when it trains in float32: then no master copy); ``largest_module``: the values of the largest
    module's own parameters (what ZeRO-3 gathers at once); ``persistent``: values ZeRO-3 keeps whole
    (small tensors); ``optimizer_states``: the states' bytes over every trainable value (Adam: 8 a value);
    ``frozen_bytes_whole``: the frozen weights' bytes where they are not c a value (QLoRA);
    ``largest_trained_module``: the largest module's trainable values (its full gradient waits for the
    reduce under ZeRO-3; default: the largest module, as in a full fine-tune)."""
    # ZeRO-0 partitions nothing: DeepSpeed's bf16 / fp16 optimizer keeps every state whole, and no buckets
    n, c = (max(workers, 1) if zero.stage >= 1 else 1), half_bytes
    if largest_trained_module is None:
        largest_trained_module = largest_module
    if optimizer_states is None:
        optimizer_states = 8 * trainable
    if frozen_bytes_whole is None:
        frozen_bytes_whole = frozen * c
    part = -(-trainable // n)  # DeepSpeed pads the last partition to the others' size
    # ZeRO-1/2 allocate reduce_bucket_size values at each backward pass, however few are trained (LoRA too)
    buckets = zero.reduce_bucket * c * (2 if zero.overlap_comm else 1) if zero.contiguous_gradients else 0
    if zero.stage == 0:
        buckets = 0
    if zero.stage == 3:
        live = min(zero.max_live_parameters, largest_module + zero.prefetch_bucket)
        keep = 0 if zero.offload_param else 1
        frozen_bytes = keep * (-(-frozen_bytes_whole // n)) + persistent * c
        params16 = keep * part * c
        gathered = live * c + largest_trained_module * c
        step_values = min(zero.sub_group_size, part)
    else:
        frozen_bytes = frozen_bytes_whole
        params16 = trainable * c
        gathered = 0
        step_values = part
    grads16 = part * c if zero.stage >= 2 else trainable * c
    master = part * 4 if c < 4 else 0  # training in float32 updates the parameters themselves
    states = -(-optimizer_states // n)
    step_grads32 = step_values * 4 if c < 4 else 0
    step_scratch = 0 if zero.named_optimizer or optimizer_states == 0 else step_values * 4
    if zero.offload_optimizer:
        # the master copy, the states and the float32 gradients live in CPU memory; gradients stream there
        master = states = step_grads32 = step_scratch = 0
        grads16 = 0
    return ZeroBytes(frozen_bytes, params16, grads16, buckets, gathered, master, states, step_grads32, step_scratch)
