"""Where a trainer's batches come from: shuffled chunks of the training rows, or step numbers."""

from __future__ import annotations

import torch

from models.training.batches import ShuffledChunks, Steps


def test_every_row_lands_in_exactly_one_chunk_of_near_equal_size() -> None:
    chunks = ShuffledChunks(rows=257, batch=64, generator=torch.Generator().manual_seed(0))
    assert chunks.per_epoch == 5  # ceil(257 / 64)
    epoch = chunks.epoch()
    assert len(epoch) == 5
    # No trailing chunk of one row: its contrastive loss would be trivially zero.
    assert {len(c) for c in epoch} == {51, 52}
    assert sorted(torch.cat(epoch).tolist()) == list(range(257))


def test_each_epoch_reshuffles_and_the_seed_repeats_the_order() -> None:
    def orders(seed: int) -> list[list[int]]:
        chunks = ShuffledChunks(rows=40, batch=16, generator=torch.Generator().manual_seed(seed))
        return [torch.cat(chunks.epoch()).tolist() for _ in range(3)]

    first = orders(7)
    assert first == orders(7)
    assert first[0] != first[1] != first[2]
    assert first != orders(8)


def test_fewer_rows_than_a_batch_are_one_chunk() -> None:
    chunks = ShuffledChunks(rows=5, batch=256, generator=torch.Generator().manual_seed(0))
    assert chunks.per_epoch == 1 and [len(c) for c in chunks.epoch()] == [5]


def test_steps_are_one_epoch_of_step_numbers() -> None:
    steps = Steps(4)
    assert steps.per_epoch == 4 and list(steps.epoch()) == [0, 1, 2, 3]
