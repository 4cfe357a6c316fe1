"""Helpers shared by tests/test_sharding.py and tests/test_distributed.py (a test module cannot import another
reliably, nor conftest.py by name)."""

import contextlib

import torch


@contextlib.contextmanager
def one_thread():
    """One intra-op thread, as every torchrun worker of a multi-process run has: the CPU kernels may take other code
    paths (other last bits) at other thread counts, so expectations are computed the way the ranks compute."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def per_video_results(ckpt, annotations, features) -> dict:
    """The independent expectation of sharded detection with chunks of one video: one ``Detector.detect`` call per
    video of the annotation file (in its order), fp32."""
    from gsmt_fast import Detector
    from gsmt_fast.data.annotations import detect_kwargs, load_annotations
    from gsmt_fast.data.features import FeatureStore
    from gsmt_fast.detector import results_to_json

    videos = list(load_annotations(annotations).videos.values())
    store = FeatureStore(features)
    det = Detector(ckpt, precision="fp32")
    kw = detect_kwargs(videos)
    results = {}
    for i, v in enumerate(videos):
        r = det.detect([store.load(v.video_id)], fps=[kw["fps"][i]], duration=[kw["duration"][i]],
                       video_id=[v.video_id])
        results.update(results_to_json(r)["results"])
    return results
