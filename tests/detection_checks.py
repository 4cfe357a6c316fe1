"""Comparison of two backends' detections, shared by the backend test files (imported by name, like
training_setup.py)."""

import numpy as np


def assert_same_detections(ref, fast, score_rtol, segment_atol=1e-9):
    """Same detections per video (labels, segments to ``segment_atol``, scores to ``score_rtol``) as multisets: two
    detections whose scores differ in the 7th digit may swap places in the selection order when a GEMM sums in
    another order than PyTorch's."""
    assert len(ref) == len(fast)
    for r, f in zip(ref, fast):
        assert len(r) == len(f)
        ro = np.lexsort((r.segments[:, 1], r.segments[:, 0], r.labels))
        fo = np.lexsort((f.segments[:, 1], f.segments[:, 0], f.labels))
        np.testing.assert_array_equal(r.labels[ro], f.labels[fo])
        np.testing.assert_allclose(r.segments[ro], f.segments[fo], rtol=0, atol=segment_atol)
        np.testing.assert_allclose(r.scores[ro], f.scores[fo], rtol=score_rtol)
