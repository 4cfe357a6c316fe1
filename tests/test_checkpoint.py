import numpy as np
import pytest
import torch

import gsmt_fast
from gsmt_fast.checkpoint import read_checkpoint


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("tiny", num_classes=3, temporal_scale=16, input_dim=8))


def test_round_trip_weights_and_metadata(tmp_path, tiny_model):
    p = tmp_path / "m.safetensors"
    gsmt_fast.save_checkpoint(tiny_model, p, class_names=["a", "b", "c"], inference={"mode": "long"},
                              grid={"convention": "resize"})
    model, cfg = gsmt_fast.load_checkpoint(p)
    assert cfg == tiny_model.cfg
    for (k, v), (k2, v2) in zip(tiny_model.state_dict().items(), model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    _, meta = read_checkpoint(p)
    assert meta.class_names == ["a", "b", "c"] and meta.inference.mode == "long" and meta.input_mode == "resize"
    x = torch.randn(2, 16, 8)
    tiny_model.eval()
    torch.testing.assert_close(tiny_model(x)[1], model(x)[1], rtol=0, atol=0)


def test_corrupt_and_foreign_files_give_clear_errors(tmp_path, tiny_model):
    p = tmp_path / "m.safetensors"
    gsmt_fast.save_checkpoint(tiny_model, p, class_names=["a", "b", "c"])
    data = p.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        gsmt_fast.load_checkpoint(tmp_path / "trunc.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="without gsmt_fast metadata"):
        gsmt_fast.load_checkpoint(tmp_path / "foreign.safetensors")
    with pytest.raises(FileNotFoundError):
        gsmt_fast.load_checkpoint(tmp_path / "missing.safetensors")


def test_wrong_class_count_rejected(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="2 class names for a model with 3 classes"):
        gsmt_fast.save_checkpoint(tiny_model, tmp_path / "m.safetensors", class_names=["a", "b"])
    assert not list(tmp_path.iterdir()), "nothing may be left behind by a failed save"


def test_save_is_atomic_when_writing_fails(tmp_path, tiny_model, monkeypatch):
    p = tmp_path / "m.safetensors"
    gsmt_fast.save_checkpoint(tiny_model, p, class_names=["a", "b", "c"])
    before = p.read_bytes()
    import safetensors.torch

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError):
        gsmt_fast.save_checkpoint(tiny_model, p, class_names=["a", "b", "c"])
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["m.safetensors"]


def test_import_state_dict_uses_weights_only(tmp_path, tiny_model):
    from gsmt_fast.checkpoint import import_state_dict

    torch.save(tiny_model.state_dict(), tmp_path / "w.pth")
    m = import_state_dict(tmp_path / "w.pth", tiny_model.cfg)
    assert np.allclose(m.input_proj.weight.detach().numpy(), tiny_model.input_proj.weight.detach().numpy())
