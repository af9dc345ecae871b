"""Data mixtures (`data.source: mixture`): several sources read in the shares of their
weights. Which source each training sequence comes from is drawn from (seed, step), as the
window is, so a resumed run sees the very batches it would have; the held-out set takes each
source's share of `eval_tokens` from its own validation split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from moescale.training.data import DataSpec, TokenData, eval_batches, held_out_tokens_per_byte

if TYPE_CHECKING:  # torch loads where batches are made: a driver that only loads tokens stays light
    import torch


@dataclass
class Mixture:
    """The parts' token arrays (one split) and their weights, summing to 1."""

    names: list[str]
    arrays: list  # np.ndarray or ShardedTokens
    weights: np.ndarray

    def __len__(self) -> int:
        """Every part's tokens: what one pass over the mixture's data reads."""
        return sum(len(a) for a in self.arrays)

    def sources(self, batch_size: int, seed: int, step: int) -> np.ndarray:
        """Which part each of a step's sequences comes from: a pure function of (seed, step)."""
        rng = np.random.default_rng([seed, step, 1])  # its own stream, apart from the windows
        return rng.choice(len(self.arrays), size=batch_size, p=self.weights)

    def batch(
        self, batch_size: int, seq_len: int, seed: int, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        rng = np.random.default_rng([seed, step])
        windows = []
        for part in self.sources(batch_size, seed, step):
            tokens = self.arrays[part]
            start = int(rng.integers(0, len(tokens) - seq_len - 1))
            windows.append(np.asarray(tokens[start : start + seq_len + 1]).astype(np.int64))
        window = torch.from_numpy(np.stack(windows))
        return window[:, :-1], window[:, 1:]

    def realised(self, batch_sizes: list[int], seed: int) -> np.ndarray:
        """The share of the sequences of steps 0, 1, … (of these sizes) each part gave."""
        counts = np.zeros(len(self.arrays))
        for step, size in enumerate(batch_sizes):
            counts += np.bincount(self.sources(size, seed, step), minlength=len(self.arrays))
        return counts / max(1, counts.sum())


def part_name(part: DataSpec, index: int) -> str:
    path = part.path if isinstance(part.path, str) else (part.path or [None])[0]
    return f"{index}:{part.source}" + (f":{path}" if path else "")


def load_mixture(spec: DataSpec, load: Callable[[DataSpec], TokenData]) -> TokenData:
    """Every part loaded by `load` as its own source would be (tokenized and cached once
    each): sources.load_tokens, handed down so that a mixture need not import its loader."""
    parts = [load(part) for part in spec.mixture]
    weights = np.array([p.weight for p in spec.mixture], dtype=float)
    weights /= weights.sum()
    names = [part_name(p, i) for i, p in enumerate(spec.mixture)]
    return TokenData(
        train=Mixture(names, [p.train for p in parts], weights),
        val=Mixture(names, [p.val for p in parts], weights),
        vocab_size=parts[0].vocab_size,
        tokenizer=parts[0].tokenizer,
        fingerprint="mixture:" + ",".join(f"{p.fingerprint}@{w:.6g}" for p, w in zip(parts, weights, strict=True)),
        parts=parts,
    )  # fmt: skip


def mixture_held_out(
    data: TokenData, n_tokens: int, seq_len: int, batch_size: int
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], float]:
    """The held-out batches, each part giving its weight's share of `n_tokens` (whole
    sequences, at least one), and their tokens per byte of text (NaN if any part's is unknown)."""
    batches, tokens, text_bytes = [], 0, 0.0
    for part, weight in zip(data.parts, data.val.weights, strict=True):
        share = max(1, round(n_tokens * weight / seq_len)) * seq_len
        mine = eval_batches(part.val, share, seq_len, batch_size)
        per_byte = part.tokens_per_byte or held_out_tokens_per_byte(part.tokenizer, mine)
        batches += mine
        tokens += share
        text_bytes += share / per_byte
    return batches, tokens / text_bytes
