"""``variants.reshape.follow``: where the channel axis goes through a Reshape, on the shapes
real exports produce (torchvision's ViT, the dynamo BERT and GPT-2, ShuffleNet's shuffle)."""
from __future__ import annotations

import pytest

sympy = pytest.importorskip("sympy")

from edgert.variants.reshape import Layout, Move, dim, follow, rest


def dims(*values: int | str) -> list:
    return [dim(v) for v in values]


def test_a_fused_qkv_projection_splits_into_chunks_of_its_width() -> None:
    move = follow(dims(65, 1, 576), dims(65, 1, 3, 192), Layout(2), 576)
    assert move == Move("split", Layout(2, 192, 3), 2, 3)


def test_heads_split_with_a_symbolic_sequence() -> None:
    move = follow(dims("batch", "seq", 128), dims("batch", "seq", 2, 64), Layout(2), 128)
    assert move == Move("split", Layout(2, 64, 3), 2, 3)


def test_the_batch_folded_into_the_heads_and_back() -> None:
    folded = follow(dims("batch", 2, "seq", 64), dims("2*batch", "seq", 64), Layout(1, 64, 3), 128)
    assert folded == Move("keep", Layout(0, 64, 2, dim("batch")), 0)
    back = follow(dims("2*batch", 64, "seq"), dims("batch", 2, 64, "seq"), Layout(0, 64, 1, dim("batch")), 128)
    assert back == Move("keep", Layout(1, 64, 2), 1)


def test_heads_merge_back_into_channels() -> None:
    assert follow(dims(65, 1, 3, 64), dims(65, 192), Layout(2, 64, 3), 192) == Move("merge", Layout(1), 1)
    # the width ahead of the heads interleaves them: not plain channels (an outer factor)
    assert follow(dims(65, 1, 64, 3), dims(65, 192), Layout(3, 64, 2), 192).layout.outer == 64


def test_channels_mixed_with_positions_are_not_followed() -> None:
    assert follow(dims(1, 48, 8, 8), dims(1, 48 * 64), Layout(1), 48) is None
    assert follow(dims(1, 48, 8, 8), dims(1, 8, 48, 8), Layout(1), 48) is None  # 6 channels x 64 positions


def test_a_channel_shuffle_folds_the_width_ahead_of_the_chunks() -> None:
    """ShuffleNet: (N, 24, 2, H, W) -> (N, 48, H, W) interleaves the two chunks; the layout
    says so with an outer factor, which every op but Transpose and Reshape refuses."""
    move = follow(dims(1, 24, 2, 8, 8), dims(1, 48, 8, 8), Layout(2, 24, 1), 48)
    assert move is not None and move.layout.outer == 24


def test_unknown_dims_are_not_guessed() -> None:
    assert follow([dim(65), None, dim(576)], dims(65, 1, 3, 192), Layout(2), 576) is None


def test_a_minus_one_entry_is_what_the_others_leave() -> None:
    assert rest(dims("seq", 2, 64), dims(128)) == dim("seq")
