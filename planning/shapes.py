"""A model's shape from its config.json alone: every parameter's name and size, no weights.

Where transformers knows the architecture, the model is built on the meta device (no
memory, no weights), so the names and sizes are exactly those LLaMA-Factory will load.
A remote-code family (Baichuan2, ChatGLM3) brings its own shape through the
``lfkit_model_shape`` hook, from the config's dimensions, so no code from a model
folder runs for a plan.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lfkit.errors import UsageError
from lfkit.state_files import read_json_bounded

_LAYER = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True)
class Tensor:
    name: str  # as in model.named_parameters(), e.g. model.layers.0.self_attn.q_proj.weight
    shape: tuple[int, ...]
    linear: bool = False  # the weight of a Linear layer: a LoRA target and what bitsandbytes quantizes

    @property
    def numel(self) -> int:
        out = 1
        for dim in self.shape:
            out *= dim
        return out

    @property
    def module(self) -> str:
        return self.name.rpartition(".")[0]

    @property
    def layer(self) -> int | None:
        match = _LAYER.search(self.name)
        return int(match.group(1)) if match else None


@dataclass
class ModelShape:
    """What a memory plan needs to know of a model."""

    model_type: str
    layers: int
    hidden: int
    intermediate: int  # the MLP's inner width (per branch for gated MLPs)
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tensors: list[Tensor] = field(default_factory=list)
    source: str = ""  # how the shape was found: transformers (meta device) or a family plugin
    torch_dtype: str | None = None  # config.json's torch_dtype
    excluded_from_lora: tuple[str, ...] = ("lm_head",)  # LLaMA-Factory's lora_target=all leaves these out
    # float32 copies of the logits that a model's own loss code holds beyond transformers' loss
    loss_copies: int = 0
    # the model's own modelling code picks its attention, and some of its versions keep seq x seq scores
    # in training whatever flash_attn says: a plan with efficient attention says what eager would add
    own_attention: str | None = None

    @property
    def parameters(self) -> int:
        return sum(t.numel for t in self.tensors)

    def linear_modules(self) -> dict[str, tuple[int, int]]:
        """module path -> (in_features, out_features) of every Linear layer."""
        return {t.module: (t.shape[1], t.shape[0]) for t in self.tensors if t.linear and t.name.endswith(".weight")}

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "layers": self.layers,
            "hidden": self.hidden,
            "intermediate": self.intermediate,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab": self.vocab,
            "parameters": self.parameters,
            "source": self.source,
        }


def decoder_tensors(
    layers: int,
    per_layer: list[tuple[str, tuple[int, ...], bool]],
    outside: list[tuple[str, tuple[int, ...], bool]],
    layer_prefix: str,
) -> list[Tensor]:
    """Tensors of a decoder stack: ``per_layer`` (name below the layer, shape, linear) repeated
    ``layers`` times under ``layer_prefix.N.``, and ``outside`` as they are."""
    out = [Tensor(name, shape, linear) for name, shape, linear in outside]
    for index in range(layers):
        out += [Tensor(f"{layer_prefix}.{index}.{name}", shape, linear) for name, shape, linear in per_layer]
    return out


# Sizes a model's config.json gives (LLaMA-style names, ChatGLM's own): each a whole number above 0.
SIZE_KEYS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
    "vocab_size", "head_dim", "max_position_embeddings", "num_layers", "ffn_hidden_size", "padded_vocab_size",
    "seq_length", "kv_channels", "multi_query_group_num",
)  # fmt: skip


def config_problem(config: Any) -> str | None:
    """What makes a config.json unusable as a model's (not an object, a size that is not a whole
    number above 0), or None. A plan on such sizes would be nonsense, and the run would fail later."""
    if not isinstance(config, dict):
        return "config.json is not a JSON object"
    for section in (config, config.get("text_config")):
        if not isinstance(section, dict):
            continue
        for key in SIZE_KEYS:
            value = section.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                return f"config.json has {key}: {json.dumps(value)}, not a whole number above 0"
    return None


def read_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    try:
        config = read_json_bounded(path)
    except OSError as exc:
        raise UsageError(f"model {folder}: cannot read config.json ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise UsageError(f"model {folder}: config.json is not valid JSON ({exc})") from None
    problem = config_problem(config)
    if problem:
        raise UsageError(f"model {folder}: {problem}")
    return config


def _from_transformers(folder: Path, config: dict[str, Any]) -> ModelShape | None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        hf_config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except (ValueError, KeyError, OSError):
        return None  # an architecture this transformers does not know without remote code
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=False)
    except (ValueError, KeyError, OSError):
        return None
    text = getattr(hf_config, "text_config", None) or hf_config
    linear = {name for name, module in model.named_modules() if "Linear" in type(module).__name__}
    tensors = [Tensor(name, tuple(p.shape), name.rpartition(".")[0] in linear) for name, p in model.named_parameters()]
    heads = text.num_attention_heads
    return ModelShape(
        model_type=hf_config.model_type,
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        intermediate=getattr(text, "intermediate_size", None) or 4 * text.hidden_size,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        vocab=text.vocab_size,
        tensors=tensors,
        source="transformers (meta device)",
        torch_dtype=config.get("torch_dtype") or config.get("dtype"),
    )


def _transformers_shape(folder: Path, config: dict[str, Any]) -> ModelShape | None:
    """``_from_transformers``, kept in lfkit's cache under config.json and the transformers and torch
    versions, which are all it depends on: building the meta model imports torch and transformers
    (about ten seconds of a 2-core machine), so a second plan of the same model (another cutoff_len,
    batch or method, a sweep's preflight of each variant) answers without them."""
    from lfkit.installed_facts import remembered
    from lfkit.patching import distribution_version

    def compute() -> dict[str, Any] | None:
        shape = _from_transformers(folder, config)
        return None if shape is None else {**asdict(shape), "excluded_from_lora": list(shape.excluded_from_lora)}

    versions = {name: distribution_version(name) for name in ("transformers", "torch")}
    if None in versions.values():
        return _from_transformers(folder, config)
    config_digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    kept = remembered("model-shape", {"config": config_digest, **versions}, compute)
    if kept is None:
        return None
    tensors = [Tensor(t["name"], tuple(t["shape"]), t["linear"]) for t in kept["tensors"]]
    return ModelShape(**{**kept, "tensors": tensors, "excluded_from_lora": tuple(kept["excluded_from_lora"])})


def model_shape(folder: str | Path) -> ModelShape:
    """The shape of the model in ``folder`` (a folder with a config.json; weights not needed)."""
    from lfkit.plugin_manager import get_manager

    folder = Path(folder)
    config = read_config(folder)
    shape = get_manager().pm.hook.lfkit_model_shape(config=config)
    if shape is not None:
        shape.torch_dtype = shape.torch_dtype or config.get("torch_dtype")
        return shape
    shape = _transformers_shape(folder, config)
    if shape is None:
        kind = config.get("model_type", "?")
        raise UsageError(
            f"model {folder}: cannot plan memory for model_type {kind!r}: transformers does not know it and "
            "no model family plugin gives its shape (lfkit_model_shape)"
        )
    return shape
