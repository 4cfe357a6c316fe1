"""Inference backends of :class:`gsmt_fast.Detector`; each module implements the same interface."""
