"""Baichuan2 (7B / 13B): W_pack LoRA target, the baichuan2 template LLaMA-Factory 0.9.5 dropped, remote code.

- Its modeling code trains through xFormers when it can import it; on ROCm the
  ``xformers-remote-code-fallback`` patch of rocm_patches takes over there.
- Its BaichuanTokenizer calls ``super().__init__()`` before it sets ``self.sp_model``;
  since transformers 4.34 the base __init__ asks for the vocabulary, so loading
  fails (``no attribute 'sp_model'``; under transformers 5 a TypeError about a
  property). ``baichuan2-tokenizer-sp-model`` loads the sentencepiece model first.
"""

from __future__ import annotations

import functools
import inspect
import logging

from lfkit.lf_versions import RANGE, describe, has_baichuan2_template
from lfkit.patching import Patch, PatchContext, SkipPatch
from lfkit.remote_code import on_remote_class

from .family import ModelFamily

TEMPLATE = "baichuan2"


def _register_template(template_module, ctx: PatchContext) -> str:
    if TEMPLATE in template_module.TEMPLATES:
        raise SkipPatch(f"LLaMA-Factory already has a {TEMPLATE} template")
    from llamafactory.data.formatter import StringFormatter

    # LLaMA-Factory <= 0.9.4's definition: user turns wrapped in reserved tokens 106 / 107,
    # the answer closed by eos alone (efficient_eos).
    template_module.register_template(
        name=TEMPLATE,
        format_user=StringFormatter(slots=["<reserved_106>{{content}}<reserved_107>"]),
        efficient_eos=True,
    )
    registered = template_module.TEMPLATES.pop(TEMPLATE)
    ctx.setitem(template_module.TEMPLATES, TEMPLATE, registered)
    return f"template {TEMPLATE} registered"


TEMPLATE_PATCH = Patch(
    id="baichuan2-template",
    why="register the baichuan2 chat template that LLaMA-Factory 0.9.5 removed",
    target="llamafactory.data.template",
    apply=_register_template,
    reference="LLaMA-Factory v0.9.4 data/template.py register_template(name='baichuan2')",
    requires=RANGE,
    condition=lambda: f"{describe()} has its own {TEMPLATE} template" if has_baichuan2_template() else None,
)

TOKENIZER_CLASS = "BaichuanTokenizer"
logger = logging.getLogger("lfkit.plugins")


def needs_mend(cls) -> bool:
    """Does this tokenizer class set self.sp_model only after super().__init__()?"""
    if cls.__name__ != TOKENIZER_CLASS or getattr(cls, "__lfkit_sp_model_first__", False):
        return False
    try:
        source = inspect.getsource(cls.__init__)
    except (OSError, TypeError):
        return False
    init_call, sp_model = source.find("super().__init__("), source.find("self.sp_model =")
    return init_call != -1 and sp_model > init_call


def mend(cls) -> None:
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, vocab_file, *args, **kwargs):
        import sentencepiece as spm

        # What the original does after super().__init__(), done before it instead.
        self.sp_model_kwargs = kwargs.get("sp_model_kwargs") or {}
        self.vocab_file = vocab_file
        self.sp_model = spm.SentencePieceProcessor(**self.sp_model_kwargs)
        self.sp_model.Load(vocab_file)
        original(self, vocab_file, *args, **kwargs)

    cls.__init__ = __init__
    cls.__lfkit_sp_model_first__ = True


def _apply_tokenizer(dynamic_module_utils, ctx: PatchContext) -> str:
    def check(cls, module) -> None:
        if isinstance(cls, type) and needs_mend(cls):
            mend(cls)
            logger.warning(
                "lfkit: %s (%s): sp_model now loads before super().__init__()", TOKENIZER_CLASS, cls.__module__
            )

    on_remote_class(dynamic_module_utils, ctx, check)
    return "mends each remote BaichuanTokenizer that sets sp_model too late"


TOKENIZER_PATCH = Patch(
    id="baichuan2-tokenizer-sp-model",
    why="Baichuan2's BaichuanTokenizer uses self.sp_model before setting it under transformers >= 4.34",
    target="transformers.dynamic_module_utils",
    apply=_apply_tokenizer,
    reference="baichuan-inc/Baichuan2-7B-Chat tokenization_baichuan.py; transformers 4.34 PreTrainedTokenizer.__init__",
    requires={"transformers": ">=4.34,<5.7"},
)

FAMILY = ModelFamily(
    name="baichuan2",
    template=TEMPLATE,
    lora_target="W_pack",
    model_types=("baichuan",),
    architectures=("BaichuanForCausalLM",),
    names=(r"baichuan-?2",),
    config_match={"vocab_size": 125696},
    needs_marker=True,  # model_type "baichuan" is Baichuan-1's too (vocab 64000, another template)
    remote_code=True,
    fixes=("baichuan2-template", "baichuan2-tokenizer-sp-model", "xformers-remote-code-fallback"),
    description="Baichuan2 7B/13B (13B uses ALiBi); fused q/k/v projection W_pack",
)


def shape(config: dict):
    """Baichuan2's parameters from its config.json (its modeling code stays unrun): a fused W_pack
    (q, k and v), a gated MLP and a NormHead output layer, which is no Linear and no LoRA target."""
    if config.get("model_type") != "baichuan":
        return None
    from lfkit.planning.shapes import ModelShape, decoder_tensors

    h, f, vocab, layers = (config["hidden_size"], config["intermediate_size"], config["vocab_size"],
                           config["num_hidden_layers"])  # fmt: skip
    per_layer = [
        ("self_attn.W_pack.weight", (3 * h, h), True),
        ("self_attn.o_proj.weight", (h, h), True),
        ("mlp.gate_proj.weight", (f, h), True),
        ("mlp.down_proj.weight", (h, f), True),
        ("mlp.up_proj.weight", (f, h), True),
        ("input_layernorm.weight", (h,), False),
        ("post_attention_layernorm.weight", (h,), False),
    ]
    outside = [("model.embed_tokens.weight", (vocab, h), False), ("model.norm.weight", (h,), False),
               ("lm_head.weight", (vocab, h), False)]  # fmt: skip
    heads = config["num_attention_heads"]
    tensors = decoder_tensors(layers, per_layer, outside, "model.layers")
    return ModelShape("baichuan", layers, h, f, heads, heads, h // heads, vocab, tensors, source="baichuan2 plugin")
