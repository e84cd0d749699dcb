"""LLaMA-2: q_proj,v_proj (as the DCU field guide trains it), the llama2 template.

model_type ``llama`` is shared by Llama-3, Yi, DeepSeek-LLM, Qwen-derived
checkpoints and many fine-tunes, none of which speak LLaMA-2's ``[INST]`` format.
So a folder is LLaMA-2 only with a LLaMA-2 marker: vocab 32000, the SentencePiece
``<s>`` / ``</s>`` of its tokenizer, or the name; and never when its tokenizer
carries Llama-3's, ChatML's, Yi's or DeepSeek's special tokens.
"""

from .family import ModelFamily

FAMILY = ModelFamily(
    name="llama2",
    template="llama2",
    lora_target="q_proj,v_proj",
    model_types=("llama",),
    architectures=("LlamaForCausalLM",),
    names=(r"llama-?2",),
    config_match={"vocab_size": 32000},
    needs_marker=True,
    tokenizer_match={"bos_token": "<s>", "eos_token": "</s>"},
    foreign_tokens=(
        "<|begin_of_text|>",  # Llama-3
        "<|start_header_id|>",  # Llama-3
        "<|im_start|>",  # ChatML (Qwen and its derivatives)
        "<|endoftext|>",  # Qwen, Yi
        "<|startoftext|>",  # Yi
        "<｜begin▁of▁sentence｜>",  # DeepSeek
    ),
    description="Meta LLaMA-2 (7B / 13B / 70B, chat and base)",
)
