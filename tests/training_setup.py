"""Settings shared by the training fixtures (conftest.py) and tests/test_train.py (a test module cannot import
conftest.py by name: pytest registers several conftest modules under that one name)."""

from pathlib import Path

THUMOS_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "synthetic_thumos_paper.yaml"

# The shipped thumos config shrunk so that a test can train it in seconds.
TINY = ["model.preset=tiny", "model.mask_dim=32", "model.num_layers=1", "train.batch_size=8"]
