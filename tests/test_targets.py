"""Label assignment (docs/DESIGN.md, "Training"): which snippets are action snippets, their classes and their mask
columns.

Expectations are written out by hand from the rules: snippet i covers [i, i+1), its centre i + 0.5 must lie in the
closed instance interval; the shortest covering instance wins; mask column t is the full instance of t's owner.
"""

from __future__ import annotations

import numpy as np
import pytest

from gsmt_fast.data.targets import Targets, assign_targets, batch_targets

K = 5  # number of action classes; background is class K


def column(length: int, rows) -> np.ndarray:
    out = np.zeros(length, dtype=np.float32)
    out[list(rows)] = 1.0
    return out


def test_single_instance():
    t = assign_targets(np.array([[2.0, 5.0]]), np.array([3]), num_classes=K, temporal_scale=8)
    # centres 2.5, 3.5, 4.5 lie in [2, 5]; 5.5 does not
    assert t.cls.tolist() == [K, K, 3, 3, 3, K, K, K]
    assert t.instance.tolist() == [-1, -1, 0, 0, 0, -1, -1, -1]
    assert t.cls.dtype == np.int64 and t.instance.dtype == np.int64 and t.mask.dtype == np.float32
    assert t.mask.shape == (8, 8)
    for snippet in (2, 3, 4):
        np.testing.assert_array_equal(t.mask[:, snippet], column(8, [2, 3, 4]))
    for snippet in (0, 1, 5, 6, 7):
        assert not t.mask[:, snippet].any()
    assert t.valid_len == 8


def test_overlapping_instances_shortest_wins_and_columns_stay_full():
    # A = [1, 7] (length 6, class 0) covers snippets 1..6; B = [4.2, 6.0] (length 1.8, class 1) covers 4, 5.
    segments = np.array([[1.0, 7.0], [4.2, 6.0]])
    t = assign_targets(segments, np.array([0, 1]), num_classes=K, temporal_scale=10)
    assert t.cls.tolist() == [K, 0, 0, 0, 1, 1, 0, K, K, K]
    assert t.instance.tolist() == [-1, 0, 0, 0, 1, 1, 0, -1, -1, -1]
    # A's columns are all of A, including the snippets B won
    for snippet in (1, 2, 3, 6):
        np.testing.assert_array_equal(t.mask[:, snippet], column(10, range(1, 7)))
    for snippet in (4, 5):
        np.testing.assert_array_equal(t.mask[:, snippet], column(10, [4, 5]))

    # the order of the instances does not matter, only their lengths
    swapped = assign_targets(segments[::-1].copy(), np.array([1, 0]), num_classes=K, temporal_scale=10)
    assert swapped.cls.tolist() == t.cls.tolist()
    np.testing.assert_array_equal(swapped.mask, t.mask)


def test_equal_length_tie_goes_to_lower_index():
    segments = np.array([[0.0, 4.0], [2.0, 6.0]])  # both length 4, shared snippets 2, 3
    t = assign_targets(segments, np.array([4, 2]), num_classes=K, temporal_scale=8)
    assert t.cls.tolist() == [4, 4, 4, 4, 2, 2, K, K]
    np.testing.assert_array_equal(t.mask[:, 3], column(8, range(0, 4)))
    np.testing.assert_array_equal(t.mask[:, 4], column(8, range(2, 6)))


def test_sub_snippet_instance_marks_nearest_snippet():
    # [3.6, 3.9] covers no centre (3.5 < 3.6 and 4.5 > 3.9); its midpoint 3.75 is nearest to centre 3.5
    t = assign_targets(np.array([[3.6, 3.9]]), np.array([2]), num_classes=K, temporal_scale=8)
    assert t.cls.tolist() == [K, K, K, 2, K, K, K, K]
    np.testing.assert_array_equal(t.mask[:, 3], column(8, [3]))
    assert t.mask.sum() == 1.0

    # midpoint 3.0 is equally far from centres 2.5 and 3.5: the lower snippet
    t = assign_targets(np.array([[2.6, 3.4]]), np.array([2]), num_classes=K, temporal_scale=8)
    assert t.cls.tolist() == [K, K, 2, K, K, K, K, K]


def test_sub_snippet_instance_inside_a_long_one():
    # the short instance wins its nearest snippet 5; the long one keeps its full column everywhere else
    segments = np.array([[0.0, 10.0], [5.1, 5.3]])
    t = assign_targets(segments, np.array([0, 1]), num_classes=K, temporal_scale=10)
    assert t.cls.tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    np.testing.assert_array_equal(t.mask[:, 5], column(10, [5]))
    np.testing.assert_array_equal(t.mask[:, 4], np.ones(10, dtype=np.float32))


def test_zero_length_instance_on_a_centre():
    t = assign_targets(np.array([[1.5, 1.5]]), np.array([0]), num_classes=K, temporal_scale=4)
    assert t.cls.tolist() == [K, 0, K, K]
    np.testing.assert_array_equal(t.mask[:, 1], column(4, [1]))


def test_instance_partly_outside_is_clipped():
    segments = np.array([[-2.0, 2.2], [6.4, 12.0]])
    t = assign_targets(segments, np.array([0, 1]), num_classes=K, temporal_scale=8)
    # centres 0.5, 1.5 in [-2, 2.2]; centres 6.5, 7.5 in [6.4, 12]
    assert t.cls.tolist() == [0, 0, K, K, K, K, 1, 1]
    np.testing.assert_array_equal(t.mask[:, 0], column(8, [0, 1]))
    np.testing.assert_array_equal(t.mask[:, 7], column(8, [6, 7]))


def test_sliver_at_window_edge_marks_edge_snippet():
    # [-3, 0.3] covers no centre inside the window; clipped to [0, 0.3], midpoint 0.15 -> snippet 0
    t = assign_targets(np.array([[-3.0, 0.3]]), np.array([4]), num_classes=K, temporal_scale=6)
    assert t.cls.tolist() == [4, K, K, K, K, K]
    np.testing.assert_array_equal(t.mask[:, 0], column(6, [0]))


def test_instances_fully_outside_are_ignored():
    segments = np.array([[-5.0, -1.0], [12.0, 15.0], [-2.0, 0.0], [10.0, 11.0]])  # last two only touch the window
    t = assign_targets(segments, np.array([0, 1, 2, 3]), num_classes=K, temporal_scale=10)
    assert (t.cls == K).all()
    assert (t.instance == -1).all()
    assert not t.mask.any()


def test_no_instances():
    t = assign_targets(np.zeros((0, 2)), np.zeros(0, dtype=np.int64), num_classes=K, temporal_scale=5)
    assert (t.cls == K).all() and not t.mask.any()


def test_padded_snippets_are_background_with_zero_mask():
    # valid_len 6 of T = 10: [4, 9] keeps only the valid centres 4.5 and 5.5; [6.5, 8] lies wholly in the padding
    segments = np.array([[4.0, 9.0], [6.5, 8.0]])
    t = assign_targets(segments, np.array([2, 3]), num_classes=K, temporal_scale=10, valid_len=6)
    assert t.cls.tolist() == [K, K, K, K, 2, 2, K, K, K, K]
    assert t.instance.tolist() == [-1, -1, -1, -1, 0, 0, -1, -1, -1, -1]
    np.testing.assert_array_equal(t.mask[:, 4], column(10, [4, 5]))
    assert not t.mask[6:, :].any()  # padded rows
    assert not t.mask[:, 6:].any()  # padded columns
    assert t.valid_len == 6


def test_sub_snippet_instance_beyond_valid_len_is_ignored_and_edge_one_is_clipped():
    # [5.2, 5.4] lies in [0, valid_len = 6) -> snippet 5; [5.9, 6.05] is clipped to [5.9, 6] -> snippet 5 as well
    # (shorter, so it wins); [6.2, 6.3] is padding only
    segments = np.array([[5.2, 5.4], [5.9, 6.05], [6.2, 6.3]])
    t = assign_targets(segments, np.array([0, 1, 2]), num_classes=K, temporal_scale=8, valid_len=6)
    assert t.cls.tolist() == [K, K, K, K, K, 1, K, K]
    assert t.instance[5] == 1


def test_closed_interval_centre_rule_at_exact_boundaries():
    # start and end exactly on centres: both end snippets count
    t = assign_targets(np.array([[2.5, 4.5]]), np.array([1]), num_classes=K, temporal_scale=8)
    assert t.cls.tolist() == [K, K, 1, 1, 1, K, K, K]
    # just inside the centres: the end snippets do not count
    t = assign_targets(np.array([[2.5001, 4.4999]]), np.array([1]), num_classes=K, temporal_scale=8)
    assert t.cls.tolist() == [K, K, K, 1, K, K, K, K]


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="ends before it starts"):
        assign_targets(np.array([[3.0, 2.0]]), np.array([0]), K, 8)
    with pytest.raises(ValueError, match="labels"):
        assign_targets(np.array([[1.0, 2.0]]), np.array([K]), K, 8)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        assign_targets(np.array([1.0, 2.0, 3.0]), np.array([0]), K, 8)
    with pytest.raises(ValueError, match="2 segments but 1 labels"):
        assign_targets(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([0]), K, 8)
    with pytest.raises(ValueError, match="valid_len"):
        assign_targets(np.array([[1.0, 2.0]]), np.array([0]), K, 8, valid_len=9)
    with pytest.raises(ValueError, match="non-finite"):
        assign_targets(np.array([[1.0, np.nan]]), np.array([0]), K, 8)


def test_batch_targets_stacks_windows():
    a = assign_targets(np.array([[1.0, 3.0]]), np.array([0]), K, 6)
    b = assign_targets(np.array([[0.0, 2.0]]), np.array([4]), K, 6, valid_len=4)
    batch = batch_targets([a, b])
    assert batch["cls"].shape == (2, 6) and batch["mask"].shape == (2, 6, 6)
    assert batch["cls"].tolist() == [[K, 0, 0, K, K, K], [4, 4, K, K, K, K]]
    assert batch["action"].tolist() == [[False, True, True, False, False, False],
                                        [True, True, False, False, False, False]]
    assert batch["valid"].tolist() == [[True] * 6, [True] * 4 + [False] * 2]
    assert batch["mask"].dtype.is_floating_point and batch["action"].dtype == batch["valid"].dtype
    with pytest.raises(ValueError, match="same temporal scale"):
        batch_targets([a, assign_targets(np.zeros((0, 2)), np.zeros(0), K, 5)])
    with pytest.raises(ValueError, match="at least one"):
        batch_targets([])
    assert isinstance(a, Targets)


# ---------------------------------------------------------------------------------------------------------------------
# boundary-distance targets (the boundary head of the boundary-refined variant)
# ---------------------------------------------------------------------------------------------------------------------


def test_boundary_targets_are_distances_from_each_centre_to_its_instance_ends():
    # [1.2, 4.6] owns snippets 1..4 (centres 1.5 .. 4.5); background rows stay 0
    t = assign_targets(np.array([[1.2, 4.6]]), np.array([0]), K, 7)
    assert t.boundary.shape == (7, 2) and t.boundary.dtype == np.float32
    expected = np.zeros((7, 2), np.float32)
    for snippet in (1, 2, 3, 4):
        expected[snippet] = (snippet + 0.5 - 1.2, 4.6 - snippet - 0.5)
    np.testing.assert_allclose(t.boundary, expected, rtol=0, atol=1e-6)


def test_boundary_targets_follow_the_owner_and_clip_to_the_valid_window():
    # A = [-3, 8] (clipped to [0, valid_len = 6]), B = [2.2, 3.8] inside it wins snippets 2, 3
    t = assign_targets(np.array([[-3.0, 8.0], [2.2, 3.8]]), np.array([0, 1]), K, 8, valid_len=6)
    np.testing.assert_allclose(t.boundary[0], (0.5, 5.5), atol=1e-6)    # A clipped to [0, 6]
    np.testing.assert_allclose(t.boundary[2], (0.3, 1.3), atol=1e-6)    # B: 2.5 - 2.2, 3.8 - 2.5
    np.testing.assert_allclose(t.boundary[3], (1.3, 0.3), atol=1e-6)
    np.testing.assert_allclose(t.boundary[5], (5.5, 0.5), atol=1e-6)
    assert not t.boundary[6:].any()  # padding


def test_boundary_targets_of_a_sub_snippet_instance_are_not_negative():
    # [3.6, 3.9] marks snippet 3 (centre 3.5, outside the instance): start distance clamps to 0
    t = assign_targets(np.array([[3.6, 3.9]]), np.array([2]), K, 8)
    np.testing.assert_allclose(t.boundary[3], (0.0, 0.4), atol=1e-6)
    assert (t.boundary >= 0).all()


def test_batch_targets_stack_boundary_targets():
    a = assign_targets(np.array([[1.0, 3.0]]), np.array([0]), K, 6)
    b = assign_targets(np.array([[0.0, 2.0]]), np.array([4]), K, 6, valid_len=4)
    batch = batch_targets([a, b])
    assert batch["boundary"].shape == (2, 6, 2)
    np.testing.assert_allclose(batch["boundary"][0, 1].numpy(), (0.5, 1.5))
    np.testing.assert_allclose(batch["boundary"][1, 0].numpy(), (0.5, 1.5))
