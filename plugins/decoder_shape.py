"""The shape of a LLaMA-style decoder (LLaMA, Gemma, Mistral, Qwen2) from its config.json, without torch.

The memory plan needs every parameter's name and size. transformers can tell them by
building the model on the meta device, but importing torch and transformers costs seconds
on a login node (a Mistral-7B plan took 10 s the first time); for the architectures of the
built-in families (LLaMA-2 and Gemma) and the two LLaMA-shaped ones most fine-tuned beside
them (Mistral, Qwen2) the layout is written out here, parameter for parameter as transformers
names it (``tests/test_memory_plan.py`` holds them equal). Any other architecture is left to
transformers.
"""

from __future__ import annotations

from typing import Any

# model_type -> whether the output layer shares the embedding when config.json does not say
TIED_BY_DEFAULT = {"llama": False, "gemma": True, "mistral": False, "qwen2": False}


# Keys whose absence transformers fills with a default of the model type's own (GemmaConfig's head_dim is
# 256, its key/value heads 16): without them, transformers answers instead.
REQUIRED = ("hidden_size", "intermediate_size", "vocab_size", "num_hidden_layers", "num_attention_heads")
# (MistralConfig's key/value heads default to 8 and Qwen2Config's to 32, not to the attention heads.)
REQUIRED_BY_TYPE = {
    "llama": REQUIRED,
    "gemma": (*REQUIRED, "head_dim", "num_key_value_heads"),
    "mistral": (*REQUIRED, "num_key_value_heads"),
    "qwen2": (*REQUIRED, "num_key_value_heads"),
}


def shape(config: dict[str, Any]):
    model_type = config.get("model_type")
    if model_type not in TIED_BY_DEFAULT or "quantization_config" in config:
        return None  # a pre-quantized folder's tensors are what its quantizer makes of them
    if any(config.get(key) is None for key in REQUIRED_BY_TYPE[model_type]):
        return None
    from lfkit.planning.shapes import ModelShape, decoder_tensors

    h, f, vocab, layers = (config["hidden_size"], config["intermediate_size"], config["vocab_size"],
                           config["num_hidden_layers"])  # fmt: skip
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or h // heads
    attention_bias, mlp_bias = bool(config.get("attention_bias")), bool(config.get("mlp_bias"))
    qkv_bias = output_bias = attention_bias
    if model_type in {"mistral", "qwen2"}:  # their configs have no bias switches: Qwen2 biases q, k and v
        qkv_bias, output_bias, mlp_bias = model_type == "qwen2", False, False

    def linear(name: str, out_features: int, in_features: int, bias: bool) -> list[tuple[str, tuple, bool]]:
        return [(f"{name}.weight", (out_features, in_features), True)] + (
            [(f"{name}.bias", (out_features,), True)] if bias else []
        )

    per_layer = [
        *linear("self_attn.q_proj", heads * head_dim, h, qkv_bias),
        *linear("self_attn.k_proj", kv_heads * head_dim, h, qkv_bias),
        *linear("self_attn.v_proj", kv_heads * head_dim, h, qkv_bias),
        *linear("self_attn.o_proj", h, heads * head_dim, output_bias),
        *linear("mlp.gate_proj", f, h, mlp_bias),
        *linear("mlp.up_proj", f, h, mlp_bias),
        *linear("mlp.down_proj", h, f, mlp_bias),
        ("input_layernorm.weight", (h,), False),
        ("post_attention_layernorm.weight", (h,), False),
    ]
    outside = [("model.embed_tokens.weight", (vocab, h), False), ("model.norm.weight", (h,), False)]
    tied = config.get("tie_word_embeddings")
    if not (TIED_BY_DEFAULT[model_type] if tied is None else tied):
        outside.append(("lm_head.weight", (vocab, h), True))
    tensors = decoder_tensors(layers, per_layer, outside, "model.layers")
    return ModelShape(model_type, layers, h, f, heads, kv_heads, head_dim, vocab, tensors,
                      source=f"{model_type} layout (lfkit.plugins, from config.json)")  # fmt: skip
