"""Peak device memory of one train step per worker, in rows a user can act on.

Pure arithmetic over a :class:`ModelShape` and the step's arguments; nothing is loaded.
What LLaMA-Factory does and the estimate follows:

- weights load in the compute dtype (bf16 / fp16 flag, else the config's dtype on a GPU,
  float32 on a CPU); QLoRA stores the frozen Linear weights in 8 or 4 bits;
- trainable parameters are upcast to float32, except with pure_bf16, BAdam, or ZeRO-3
  without quantization (model/adapter.py);
- gradients have the dtype of their parameter; Adam keeps two states per trainable value
  and a step counter per tensor;
- gradient checkpointing is on unless ``disable_gradient_checkpointing``: each layer keeps
  its input and one layer is recomputed at a time;
- DeepSpeed casts the model to half precision and keeps float32 master weights in its
  optimizer; ZeRO-1/2/3 split optimizer states / gradients / parameters over the workers,
  offload moves them to CPU memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from lfkit.flags import truthy

from . import zero as zero_settings
from .shapes import ModelShape
from .trainable import Training, lora_targets, training

GIB = 2**30
# A CUDA / HIP context, cuBLAS/hipBLAS workspaces and the allocator's first blocks, before
# any tensor exists: what max_memory_allocated does not see but the card loses.
CONTEXT_BYTES = 512 * 2**20
# With more than one worker, NCCL / RCCL's buffers and streams besides, outside PyTorch's allocator:
# LLaMA-Factory issue 1221 (8 x V100 32 GB, ZeRO-2) went out of memory with 31.75 GiB total, 28.28 GiB
# allocated and reserved, 1.95 GiB free: 1.52 GiB outside PyTorch, a context and about 1 GiB more.
COMMUNICATOR_BYTES = 2**30
# What the caching allocator holds beyond the live tensors at their peak (freed blocks it keeps,
# blocks split for smaller tensors): what nvidia-smi / rocm-smi and max_memory_reserved show
# and max_memory_allocated does not. It grows with what is allocated and freed at every step
# (activations, the loss's tensors, gradients), not with the weights, allocated once. Measured pairs
# of the two on the Hugging Face stack (fms-acceleration's A100 benchmark, published_peaks.json
# p27-p31: nvidia-smi less the context, minus max_memory_allocated, over those rows of the plan):
# 0.25-0.37 for LoRA and QLoRA at micro-batch 4 and 8 x 4096 tokens, 0.28 for full fine-tuning.
RESERVE_FRACTION = 0.35
# Most of that reserve is whole cached blocks, which the allocator hands back to the driver and tries
# again before it raises out-of-memory (CUDACachingAllocator: release_cached_blocks, then alloc_block
# once more); only blocks split for a tensor still alive stay. So a run needs only this share of the
# reserve. Out-of-memory messages give it as "reserved" less "allocated" after that release: 0 of
# 28.28 GiB (LLaMA-Factory issue 1221, full ZeRO-2), 0.20 of 30.35 GiB (a Baichuan QLoRA without
# checkpointing, 0.6 % of its card), 0.38 of 20.60 GiB (a ZeRO-2 LLaMA-2 pre-training on an A10);
# benchmarks/oom_observations.json keeps them.
FRAGMENTATION_FRACTION = 0.05
# Batches of different lengths (LLaMA-Factory pads each batch to its own longest sample) leave the
# allocator holding blocks sized for earlier lengths beside those of the current one, above all the
# logits and the loss's float32 copies, the largest tensors of a step. Counted in float32 logits
# (tokens x vocab x 4 bytes) of the longest batch. ms-swift's benchmark table in two versions comes
# close to an A/B of this: the same training code and settings, but the later script drops samples
# longer than max_length instead of cutting them to it, so its batch lengths vary (some library
# versions moved too). max_memory_reserved rose by 2.5 / 5.0 / 8.8 GiB at 512 / 1024 / 2048 tokens for
# Qwen-7B LoRA, 7.6-8.7 such copies, by 2.9 GiB (5.9; 1.7 GiB of it the eager attention ChatGLM3's
# code of January ran) for ChatGLM3-6B, by 0.4 GiB for Baichuan2-7B; at 4096 tokens, where most
# samples are shorter in both, by 6.7 GiB still, which this row does not explain. A user's
# LLaMA-Factory run of Qwen2-7B (issue 7409) grew "after a few steps" to 5.8 GiB above the plan
# without this row. Every reading that benchmarks/published_peaks.py holds stays within 0.9-1.3 of
# the plan for 4.1 to 4.9 copies; 4.5 is the middle of that band.
VARYING_LENGTH_LOGITS = 4.5
# bitsandbytes' 4-bit matmul kept its input for the backward pass until 0.43.2 (bitsandbytes#1270,
# "delete useless buffered activation"); the 8-bit one still keeps it. A frozen 16-bit Linear does not.
BNB_4BIT_DROPS_INPUTS = "0.43.2"
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ROW_TITLES = {
    "weights": "weights (frozen)",
    "trainable": "trainable parameters",
    "gradients": "gradients",
    "buckets": "ZeRO reduce buckets",
    "gathered": "ZeRO-3 gathered parameters",
    "optimizer": "optimizer states",
    "activations": "activations",
    "logits": "logits and loss",
    "step": "optimizer step, beyond the freed activations",
    "overhead": "runtime overhead",
    "fragmentation": "allocator: split blocks",
    "cached": "allocator: cached free blocks",
    "lengths": "allocator: earlier batch lengths",
}
# What the device loses beyond live tensors (max_memory_allocated counts none of these).
ALLOCATOR_ROWS = ("overhead", "fragmentation", "cached", "lengths")
# What nvidia-smi shows and a run does not need: blocks the allocator returns before out-of-memory.
READING_ROWS = ("cached", "lengths")


@dataclass
class Setting:
    """What an estimate assumes; printed with it."""

    device: str  # gpu | cpu
    dtype: str
    trainable_dtype: str
    method: str
    checkpointing: bool
    micro_batch: int
    seq_len: int
    seq_source: str
    workers: int = 1
    zero_stage: int | None = None
    offload_optimizer: bool = False
    offload_param: bool = False
    quantization_bit: int | None = None
    optimizer: str = "adamw_torch"
    lora_rank: int | None = None
    dora: bool = False
    # "efficient": SDPA's flash / memory-efficient kernels or FlashAttention (no seq x seq matrix);
    # "eager": flash_attn=disabled, transformers' eager attention, which keeps the scores.
    attention: str = "efficient"
    lengths_vary: bool = True  # batches of different lengths (no packing, most samples short of the longest)
    quantized_keep_inputs: bool = False  # bitsandbytes keeps each quantized Linear's input for backward
    bitsandbytes: str | None = None  # the version the QLoRA rows assume
    zero: zero_settings.ZeroConfig | None = None  # the DeepSpeed config's ZeRO settings

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["zero"] = self.zero.as_dict() if self.zero else None
        return out

    def describe(self) -> str:
        method = self.method + (f" rank {self.lora_rank}" if self.lora_rank else "") + (" DoRA" if self.dora else "")
        parts = [method]
        if self.quantization_bit:
            kept = ", keeps the quantized layers' inputs" if self.quantized_keep_inputs else ""
            version = f"bitsandbytes {self.bitsandbytes}" if self.bitsandbytes else "a current bitsandbytes"
            parts.append(f"{self.quantization_bit}-bit base (QLoRA; {version}{kept})")
        parts.append(f"weights {self.dtype}, trainable {self.trainable_dtype}")
        parts.append(f"micro-batch {self.micro_batch} x {self.seq_len} tokens ({self.seq_source})")
        parts.append("batch lengths vary" if self.lengths_vary else "batches all of the longest length")
        parts.append("gradient checkpointing " + ("on" if self.checkpointing else "off"))
        if self.attention == "eager":
            parts.append("eager attention (seq x seq scores)")
        if self.zero_stage is not None:
            moved = (("optimizer", self.offload_optimizer), ("params", self.offload_param))
            offload = [name for name, on in moved if on]
            parts.append(f"ZeRO-{self.zero_stage}" + (f" offload {'+'.join(offload)}" if offload else ""))
        parts.append(f"{self.workers} worker(s)")
        parts.append(f"optimizer {self.optimizer}")
        return "; ".join(parts)


@dataclass
class Estimate:
    setting: Setting
    rows: dict[str, int]
    parameters: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def needed(self) -> int:
        """What must be free on the card for the step not to go out of memory: the live tensors at their
        peak, the context and the blocks the allocator cannot hand back."""
        return sum(v for k, v in self.rows.items() if k not in READING_ROWS)

    @property
    def reading(self) -> int:
        """What nvidia-smi / rocm-smi / max_memory_reserved will show: also the cached blocks a run does
        not need (freed, or sized for earlier batch lengths)."""
        return sum(self.rows.values())

    @property
    def tensors(self) -> int:
        """The live tensors at the peak: what max_memory_allocated reports."""
        return self.reading - sum(self.rows.get(k, 0) for k in ALLOCATOR_ROWS)


def deepspeed_config(value: Any) -> dict[str, Any]:
    """A step's whole DeepSpeed config (a preset or a file; resolution checked it already)."""
    if not value:
        return {}
    from lfkit.launching.deepspeed import config_path, read_config

    return read_config(config_path(str(value)))


def compute_dtype(args: dict[str, Any], shape: ModelShape, device: str) -> str:
    """LLaMA-Factory's choice: the precision flag; on a GPU without one, the config's bf16 or fp16."""
    if truthy(args.get("bf16")) or truthy(args.get("pure_bf16")):
        return "bfloat16"
    if truthy(args.get("fp16")):
        return "float16"
    if device == "gpu":
        return "bfloat16" if shape.torch_dtype == "bfloat16" else "float16"
    return "float32"


def setting_for(
    shape: ModelShape,
    args: dict[str, Any],
    lfkit_args: dict[str, Any],
    seq_len: int,
    seq_source: str,
    device: str,
    lengths_vary: bool = True,
    bitsandbytes: str | None = None,
) -> Setting:
    dtype = compute_dtype(args, shape, device)
    zero = zero_settings.read(deepspeed_config(args.get("deepspeed")), shape.hidden) if args.get("deepspeed") else None
    stage = zero.stage if zero else None
    qbit = args.get("quantization_bit")
    method = str(args.get("finetuning_type") or "lora")
    upcast = not (truthy(args.get("pure_bf16")) or truthy(args.get("use_badam"))) and not (stage == 3 and not qbit)
    if stage is not None and dtype != "float32":
        trainable_dtype = dtype  # DeepSpeed casts the whole module; its optimizer holds the float32 master copy
    else:
        trainable_dtype = "float32" if upcast else dtype
    workers = int(lfkit_args.get("nproc_per_node") or 1) * int(lfkit_args.get("nnodes") or 1)
    return Setting(
        device=device,
        dtype=dtype,
        trainable_dtype=trainable_dtype,
        method=method,
        checkpointing=not truthy(args.get("disable_gradient_checkpointing")),
        micro_batch=int(args.get("per_device_train_batch_size") or 8),
        seq_len=seq_len,
        seq_source=seq_source,
        workers=workers,
        zero_stage=stage,
        offload_optimizer=bool(zero and zero.offload_optimizer),
        offload_param=bool(zero and zero.offload_param),
        zero=zero,
        quantization_bit=int(qbit) if qbit else None,
        optimizer=str(args.get("optim") or "AdamW (the default)"),
        lora_rank=int(args.get("lora_rank", 8)) if method == "lora" else None,
        dora=method == "lora" and truthy(args.get("use_dora")),
        attention="eager" if str(args.get("flash_attn") or "auto").lower() in {"disabled", "eager"} else "efficient",
        lengths_vary=lengths_vary,
        quantized_keep_inputs=bool(qbit) and _keeps_inputs(int(qbit), bitsandbytes),
        bitsandbytes=bitsandbytes if qbit else None,
    )


def _keeps_inputs(bits: int, version: str | None) -> bool:
    if bits != 4:
        return True
    if not version:
        return False
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version) < Version(BNB_4BIT_DROPS_INPUTS)
    except InvalidVersion:
        return False


def _quantized_bytes(numel: int, fan_out: int, bits: int) -> int:
    if bits == 4:
        # packed 4-bit values, and one absmax per 64 values (8 bits each with double quantization)
        return numel // 2 + numel // 64 + (numel // 64 // 256) * 4
    return numel + fan_out * 4  # int8 values and a float32 scale per output row


def _weight_bytes(train: Training, s: Setting) -> int:
    c = DTYPE_BYTES[s.dtype]
    quantized = {t.name for t in train.quantizable} if s.quantization_bit else set()
    total = 0
    for t in train.frozen:
        total += _quantized_bytes(t.numel, t.shape[0], s.quantization_bit) if t.name in quantized else t.numel * c
    return total


def _optimizer_bytes(train: Training, s: Setting) -> int:
    name = s.optimizer.lower()
    m = train.trainable_numel
    param_bytes = DTYPE_BYTES[s.trainable_dtype]
    if "sgd" in name or "lomo" in name:
        return 0
    if "adafactor" in name:  # factored second moments: a row and a column per matrix
        return sum(sum(t.shape) if len(t.shape) == 2 else t.numel for t in train.trainable) * 4
    per_value = 2 if "8bit" in name else 2 * (4 if s.zero_stage is not None else param_bytes)
    states = m * per_value + 4 * len(train.trainable)  # and a float32 step counter per tensor
    if s.zero_stage is not None and s.dtype != "float32":
        states += m * 4  # DeepSpeed's float32 master copy of the half-precision parameters
    return states


def _layer_activation_bytes(shape: ModelShape, s: Setting, lora_inputs: int, lora_modules: int, dropout: bool) -> int:
    """Bytes per token that one decoder layer keeps for its backward pass (no checkpointing).

    Fitted to the tensors PyTorch really saves (saved_tensors_hooks on LLaMA-shaped layers,
    bf16 autocast and float32; benchmarks/memory_plan.py measures it again):
    - each RMSNorm computes in float32: its input upcast, the normalised value and, in
      half precision, the result the weight multiplies: about 8 bytes a value, 10 in half;
    - attention keeps q, k, v and its output (SDPA and flash kernels keep no seq x seq
      matrix): about c/2 per hidden value and 7c/4 per key/value value;
    - a gated MLP keeps gate, its activation, up and their product: 4c per inner value;
    - LoRA keeps each adapter's small rank-wide output, and with dropout a mask and the
      dropped input for every wrapped Linear.
    """
    c = DTYPE_BYTES[s.dtype]
    h, f, kv = shape.hidden, shape.intermediate, shape.kv_heads * shape.head_dim
    norms = 2 * (8 + (c if c < 4 else 0)) * h
    attention = c * h // 2 + 7 * c * kv // 4 + 4 * shape.heads
    mlp = 4 * c * f
    lora = lora_modules * (s.lora_rank or 0) * 8 + (lora_inputs * (c + 1) if dropout else 0)
    # the inputs of the attention and MLP projections that nothing else keeps: the two normed hidden states
    # and the MLP's inner product (the attention output is kept by the attention kernel already)
    quantized = c * (2 * h + f) if s.quantized_keep_inputs else 0
    return norms + attention + mlp + lora + quantized


def _activation_bytes(shape: ModelShape, train: Training, s: Setting, args: dict[str, Any]) -> int:
    tokens = s.micro_batch * s.seq_len
    lora_inputs = lora_modules = 0
    if train.method == "lora":
        linear = shape.linear_modules()
        per_layer = [p for p in lora_targets(shape, args) if ".0." in p]
        lora_inputs, lora_modules = sum(linear[p][0] for p in per_layer), len(per_layer)
    dropout = float(args.get("lora_dropout") or 0) > 0
    layer = _layer_activation_bytes(shape, s, lora_inputs, lora_modules, dropout)
    c = DTYPE_BYTES[s.dtype]
    # the backward pass of a layer holds the gradients of its widest activations besides them
    working = 2 * c * (shape.intermediate + shape.hidden)
    final_norm = (2 * c + 4) * shape.hidden
    if s.checkpointing:
        kept = shape.layers * c * shape.hidden + layer
    else:
        kept = shape.layers * layer
    scores = 0
    if s.attention == "eager":
        # eager attention materialises heads x seq x seq scores per sample: softmax runs in float32 and
        # keeps its output for backward, the matmul with v keeps the half-precision copy; the float32
        # scores softmax reads live besides them. Checkpointing keeps them for the recomputed layer only.
        per_layer = s.micro_batch * shape.heads * s.seq_len * s.seq_len
        scores = per_layer * (4 + c) * (1 if s.checkpointing else shape.layers) + per_layer * 4
    autocast_copies = 0
    if s.device == "gpu" and s.dtype != "float32" and s.trainable_dtype == "float32" and train.method != "lora":
        # mixed precision keeps a half-precision copy of every float32 weight it multiplies, for the whole pass
        autocast_copies = train.trainable_numel * c
    return tokens * (kept + working + final_norm) + autocast_copies + scores


def _zero_bytes(
    shape: ModelShape, train: Training, s: Setting, weights: int, optimizer: int
) -> zero_settings.ZeroBytes:
    """DeepSpeed's buffers for the step (planning/zero.py), from the rows the plan would have without it."""
    c = DTYPE_BYTES[s.dtype]
    m = train.trainable_numel
    master = m * 4 if c < 4 else 0
    modules: dict[str, int] = {}
    for t in shape.tensors:
        modules[t.module] = modules.get(t.module, 0) + t.numel
    trained: dict[str, int] = {}
    for t in train.trainable:
        trained[t.module] = trained.get(t.module, 0) + t.numel
    threshold = s.zero.persistence_threshold
    return zero_settings.allocated(
        s.zero,
        trainable=m,
        frozen=sum(t.numel for t in train.frozen),
        workers=s.workers,
        half_bytes=c,
        largest_module=max(modules.values(), default=0),
        persistent=sum(t.numel for t in shape.tensors if t.numel <= threshold) if s.zero.stage == 3 else 0,
        optimizer_states=max(0, optimizer - master),
        frozen_bytes_whole=weights,
        largest_trained_module=max(trained.values(), default=0),
    )


def estimate(
    shape: ModelShape,
    args: dict[str, Any],
    lfkit_args: dict[str, Any] | None = None,
    seq_len: int | None = None,
    seq_source: str = "cutoff_len",
    device: str = "gpu",
    lengths_vary: bool = True,
    bitsandbytes: str | None = None,
) -> Estimate:
    """The estimate for one train step's arguments (LLaMA-Factory keys) on ``device``; ``lengths_vary``
    says whether its batches differ in length (planning.sequence says it for a step's data);
    ``bitsandbytes`` is the version a QLoRA step will run with (default: the installed one)."""
    if seq_len is None:
        seq_len = int(args.get("cutoff_len") or 2048)
    if bitsandbytes is None and args.get("quantization_bit"):
        from lfkit.patching import distribution_version

        bitsandbytes = distribution_version("bitsandbytes")
    s = setting_for(shape, args, lfkit_args or {}, seq_len, seq_source, device, lengths_vary, bitsandbytes)
    train = training(shape, args)
    c = DTYPE_BYTES[s.dtype]
    m = train.trainable_numel
    weights = _weight_bytes(train, s)
    trainable = m * DTYPE_BYTES[s.trainable_dtype]
    gradients = m * DTYPE_BYTES[s.trainable_dtype]
    optimizer = _optimizer_bytes(train, s)
    notes: list[str] = []
    extra = {"buckets": 0, "gathered": 0}
    step = 0
    if s.zero is not None:
        zero = _zero_bytes(shape, train, s, weights, optimizer)
        weights, trainable, gradients = zero.frozen, zero.params16, zero.grads16
        optimizer = zero.master + zero.states
        extra = {"buckets": zero.buckets, "gathered": zero.gathered}
        step = zero.step_grads32 + zero.step_scratch
        if s.offload_optimizer or s.offload_param:
            notes.append("CPU offload needs DeepSpeed's CPUAdam op, which does not build on some ROCm versions")
    activations = _activation_bytes(shape, train, s, args)
    # the logits, their float32 copy, log-probs (and what a model's own loss code copies besides)
    logits = s.micro_batch * s.seq_len * shape.vocab * (c + 4 + 4 + 4 * shape.loss_copies)
    # the optimizer step comes after the backward pass has freed the activations, the logits and ZeRO-3's
    # gathered parameters: only what it allocates beyond them raises the peak (the reduce buckets may
    # stay: DeepSpeed 0.19 frees ZeRO-2's before the step, older releases and ZeRO-3 keep them)
    passing = activations + logits + extra["gathered"]
    rows = {
        "weights": weights,
        "trainable": trainable,
        "gradients": gradients,
        **extra,
        "optimizer": optimizer,
        "activations": activations,
        "logits": logits,
        "step": max(0, step - passing),
        "overhead": (CONTEXT_BYTES + (COMMUNICATOR_BYTES if s.workers > 1 else 0)) if device == "gpu" else 0,
    }
    changing = rows["activations"] + rows["logits"] + rows["gradients"]
    reserve = int(changing * RESERVE_FRACTION) if device == "gpu" else 0
    rows["fragmentation"] = int(changing * FRAGMENTATION_FRACTION) if device == "gpu" else 0
    rows["cached"] = reserve - rows["fragmentation"]
    varying = s.lengths_vary and device == "gpu"
    rows["lengths"] = int(VARYING_LENGTH_LOGITS * s.micro_batch * s.seq_len * shape.vocab * 4) if varying else 0
    if rows["lengths"] > GIB:
        notes.append(
            f"batches of varying length leave the allocator {rows['lengths'] / GIB:.1f} GiB of blocks sized for "
            "earlier lengths (packing=true has none, but makes every sequence cutoff_len long)"
        )
    if shape.own_attention and s.attention != "eager" and device == "gpu":
        eager = _activation_bytes(shape, train, replace(s, attention="eager"), args) - activations
        if eager > GIB:
            notes.append(
                f"{shape.own_attention} keeps seq x seq attention scores in training: with that code this step "
                f"needs about {eager * (1 + FRAGMENTATION_FRACTION) / GIB:.1f} GiB more (flash_attn=disabled plans it)"
            )
    parameters = {"total": shape.parameters, "trainable": m}
    return Estimate(s, rows, parameters, notes)
