"""Greedy, batched answers through LLaMA-Factory's own loader and chat template.

Loading goes through ``get_infer_args`` / ``load_tokenizer`` / ``load_model``, so a
base model, a base plus adapter(s) and a merged model load exactly as
``llamafactory-cli chat`` would load them (and lfkit's lifecycle hooks fire).
The prompt is built by the same template the training run used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any


class Generator:
    def __init__(self, infer_args: dict[str, Any]) -> None:
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.hparams import get_infer_args
        from llamafactory.model import load_model, load_tokenizer

        model_args, data_args, finetuning_args, generating_args = get_infer_args(dict(infer_args))
        self.tokenizer = load_tokenizer(model_args)["tokenizer"]
        self.tokenizer.padding_side = "left"
        self.template = get_template_and_fix_tokenizer(self.tokenizer, data_args)
        self.model = load_model(self.tokenizer, model_args, finetuning_args, is_trainable=False)
        self.max_new_tokens = generating_args.max_new_tokens
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id

    def prompt_ids(self, messages: list[dict[str, str]], system: str | None = None) -> list[int]:
        ids, _ = self.template.encode_oneturn(self.tokenizer, [*messages, {"role": "assistant", "content": ""}], system)
        return ids

    def answer(self, batch: Sequence[list[int]]) -> list[str]:
        import torch

        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[self.pad_id] * (width - len(ids)) + ids for ids in batch])
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
        device = self.model.device
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                eos_token_id=self.template.get_stop_token_ids(self.tokenizer),
                pad_token_id=self.pad_id,
            )
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in output]

    def answers(
        self, prompts: Sequence[list[int]], batch_size: int, progress: Callable[[int], None] | None = None
    ) -> Iterator[str]:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            yield from self.answer(batch)
            if progress is not None:
                progress(len(batch))
