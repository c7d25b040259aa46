"""The real CLIP BPE tokenizer with its ids folded into a small token table.

CLIP's vocabulary has 49,408 entries; a full-width table for them would be three quarters
of a small model's weights while its world uses a few dozen words. Ordinary ids are folded
modulo the table size (the hashing trick), so unseen words still get distinct rows (what
fine-tuning on new words needs); start and end of text keep dedicated rows, and the end
token keeps the largest id because open_clip pools the text at the argmax id.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from open_clip.tokenizer import SimpleTokenizer

PAD_ID = 0


class FoldedTokenizer:
    """CLIP BPE tokens folded into ``vocab_size`` rows: ``tokenizer(texts) -> (n, ctx)``."""

    def __init__(self, *, vocab_size: int, context_length: int) -> None:
        if vocab_size < 16:
            raise ValueError("vocab_size must leave room for ordinary tokens")
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.bpe = SimpleTokenizer(context_length=context_length)
        self.sot = vocab_size - 2
        self.eot = vocab_size - 1

    def fold(self, ids: torch.Tensor) -> torch.Tensor:
        """Map CLIP token ids into this table."""
        ordinary = 1 + (ids - 1) % (self.vocab_size - 3)
        out = torch.where(ids == PAD_ID, torch.zeros_like(ids), ordinary)
        out = torch.where(ids == self.bpe.sot_token_id, torch.full_like(ids, self.sot), out)
        return torch.where(ids == self.bpe.eot_token_id, torch.full_like(ids, self.eot), out)

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        return self.fold(self.bpe(texts, context_length=self.context_length))

    def word_rows(self, words: Sequence[str]) -> dict[str, tuple[int, ...]]:
        """The table rows each word uses (to check a vocabulary has no collisions)."""
        rows: dict[str, tuple[int, ...]] = {}
        for word in words:
            ids = torch.tensor(self.bpe.encode(word))
            rows[word] = tuple(int(i) for i in self.fold(ids))
        return rows
