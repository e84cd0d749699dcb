"""What fits the target: the longest sequence and the largest micro-batch of a train step (``lfkit plan --fit``).

The two questions users ask before a node is allocated. The estimate grows with the
sequence and with the micro-batch, so each answer is a search over the same estimate the
plan prints; nothing else is assumed.

- Longest sequence: the tokens per sample that fit at the step's micro-batch, as if the
  longest sample were that long (packing, or long data), with batch lengths varying as the
  step's own do; a ``cutoff_len`` above the data's longest sample changes nothing, and the
  answer says so.
- Largest micro-batch: at the step's own sequence length, among the micro-batches that
  divide the global batch (micro-batch x accumulation), so the training's result is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .memory import Estimate

# The search for the longest sequence stops here when the model states no limit of its own.
LONGEST_TRIED = 1 << 20


@dataclass
class Fit:
    target: int
    micro_batch: int  # the step's own
    accumulation: int
    data_tokens: int  # the sequence the step sees now (longest sample or cutoff_len)
    data_source: str
    longest_tokens: int | None  # None: not even one token per sample fits
    longest_needed: int | None
    limit: int  # the longest the search tried (the model's max_position_embeddings where given)
    best_micro_batch: int | None  # None: not even a micro-batch of 1 fits
    best_accumulation: int | None
    best_needed: int | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def lines(self) -> list[str]:
        """What a person reads: each answer as the keys to add to the command."""
        out = []
        if self.longest_tokens is None:
            out.append(f"longest sequence at micro-batch {self.micro_batch}: none fits (not even 1 token)")
        else:
            at_limit = " (the model's limit)" if self.longest_tokens >= self.limit else ""
            line = (
                f"longest sequence at micro-batch {self.micro_batch}: {self.longest_tokens:,} tokens{at_limit} "
                f"(cutoff_len={self.longest_tokens}, {self.longest_needed / 2**30:.2f} GiB); "
                f"the step now sees {self.data_tokens:,} tokens: {self.data_source}"
            )
            if self.data_source.startswith("longest") and self.longest_tokens > self.data_tokens:
                line += f"; a cutoff_len above {self.data_tokens} changes nothing for this data"
            out.append(line)
        global_batch = self.micro_batch * self.accumulation
        if self.best_micro_batch is None:
            out.append(f"largest micro-batch at {self.data_tokens:,} tokens: none fits (not even 1)")
        else:
            out.append(
                f"largest micro-batch at {self.data_tokens:,} tokens, global batch {global_batch} kept: "
                f"per_device_train_batch_size={self.best_micro_batch} "
                f"gradient_accumulation_steps={self.best_accumulation} ({self.best_needed / 2**30:.2f} GiB)"
            )
        return out


def _largest(fits: Callable[[int], bool], low: int, high: int) -> int | None:
    """The largest n in [low, high] with fits(n), for a fits that holds up to some n and not beyond."""
    if not fits(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def what_fits(
    args: dict[str, Any],
    estimate_at: Callable[[dict[str, Any], int], Estimate],
    tokens: int,
    source: str,
    target: int,
    limit: int | None,
) -> Fit:
    """``estimate_at(args, seq_len)`` estimates the step with other arguments and sequence length."""
    micro = int(args.get("per_device_train_batch_size") or 8)
    accumulation = int(args.get("gradient_accumulation_steps") or 1)
    limit = limit or LONGEST_TRIED
    needs: dict[int, int] = {}

    def sequence_fits(seq: int) -> bool:
        needs[seq] = estimate_at({**args, "cutoff_len": seq}, seq).needed
        return needs[seq] <= target

    longest = _largest(sequence_fits, 1, limit)
    global_batch = micro * accumulation
    best = best_needed = None
    for candidate in sorted((d for d in range(1, global_batch + 1) if global_batch % d == 0), reverse=True):
        change = {"per_device_train_batch_size": candidate, "gradient_accumulation_steps": global_batch // candidate}
        needed = estimate_at({**args, **change}, tokens).needed
        if needed <= target:
            best, best_needed = candidate, needed
            break
    return Fit(
        target=target,
        micro_batch=micro,
        accumulation=accumulation,
        data_tokens=tokens,
        data_source=source,
        longest_tokens=longest,
        longest_needed=None if longest is None else needs[longest],
        limit=limit,
        best_micro_batch=best,
        best_accumulation=None if best is None else global_batch // best,
        best_needed=best_needed,
    )
