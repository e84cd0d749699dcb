"""A model family: how to recognise it, and what a run on it needs.

Plain data, registered through ``lfkit_register_models(register)`` as
``register(name, ModelFamily(...))``. Detection (``detect``) scores a model
folder against every registered family; the run-time side (``defaults``) fills
the template and lora_target a user did not give, asks for consent before remote
code runs, and stops early on a transformers that cannot load the family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class ModelFamily:
    lfkit_record: ClassVar[str] = "family"  # what the plugin manager checks register() against
    name: str
    template: str  # LLaMA-Factory chat template
    lora_target: str  # LLaMA-Factory lora_target (comma-separated module names)
    model_types: tuple[str, ...] = ()  # config.json model_type
    architectures: tuple[str, ...] = ()  # config.json architectures
    names: tuple[str, ...] = ()  # regexes on the folder name, lower-cased
    config_match: dict[str, Any] = field(default_factory=dict)  # config.json values that single it out
    # model_type and architecture are shared with look-alikes (many models are model_type "llama"):
    # then a claim also needs a marker: a config_match value, the tokenizer_match tokens or the name.
    needs_marker: bool = False
    tokenizer_match: dict[str, str] = field(default_factory=dict)  # special tokens of its tokenizer (bos_token, ...)
    marker_tokens: tuple[str, ...] = ()  # tokens its tokenizer defines (all of them)
    foreign_tokens: tuple[str, ...] = ()  # tokens whose presence in the tokenizer says it is another family
    remote_code: bool = False  # runs Python from the model folder (trust_remote_code)
    fixes: tuple[str, ...] = ()  # ids of the patches it brings
    requires: dict[str, str] = field(default_factory=dict)  # distribution -> specifier, with the reason in why
    requires_why: str = ""
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "template": self.template,
            "lora_target": self.lora_target,
            "recognised_by": recognised_by(self),
            "remote_code": self.remote_code,
            "fixes": list(self.fixes),
            "requires": dict(self.requires),
            "description": self.description,
        }


def recognised_by(family: ModelFamily) -> list[str]:
    out = [f"model_type={t}" for t in family.model_types]
    out += [f"architecture={a}" for a in family.architectures]
    markers = [f"{k}={v}" for k, v in family.config_match.items()]
    if family.tokenizer_match:
        markers.append("tokenizer " + " ".join(f"{k}={v}" for k, v in family.tokenizer_match.items()))
    if family.marker_tokens:
        markers.append("tokens " + " ".join(family.marker_tokens))
    markers += [f"name~{n}" for n in family.names]
    if family.needs_marker:
        out.append("and one of: " + ", ".join(markers))
    else:
        out += markers
    if family.foreign_tokens:
        out.append("not with tokens " + " ".join(family.foreign_tokens))
    return out
