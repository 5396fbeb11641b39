"""Checkpoints: safetensors + JSON round trip; corrupt and foreign files give one line."""

import pytest
import torch

from napari_histoai.errors import JobError
from napari_histoai.models import (
    list_models,
    load_checkpoint,
    load_state_strict,
    save_checkpoint,
)


def test_round_trip_and_listing(tmp_path, monkeypatch):
    monkeypatch.setenv("HISTOAI_MODELS", str(tmp_path))
    net = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "mine", net.state_dict(), {"kind": "toy", "architecture": {"n": 3}})
    state, cfg = load_checkpoint("mine", kind="toy")
    assert cfg["architecture"] == {"n": 3} and "package_version" in cfg
    other = torch.nn.Linear(3, 2)
    load_state_strict(other, state)
    assert torch.equal(other.weight, net.weight)
    assert "mine" in list_models("toy") and "mine" not in list_models("other")
    # overwriting keeps a valid model in place
    save_checkpoint(tmp_path / "mine", torch.nn.Linear(3, 2).state_dict(), {"kind": "toy"})
    assert load_checkpoint(tmp_path / "mine")[1]["kind"] == "toy"


def test_corrupt_foreign_and_wrong_models(tmp_path):
    save_checkpoint(tmp_path / "m", torch.nn.Linear(3, 2).state_dict(), {"kind": "toy"})
    with pytest.raises(JobError, match="not a 'detector' model|'toy' model"):
        load_checkpoint(tmp_path / "m", kind="detector")
    (tmp_path / "m" / "weights.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(JobError, match="corrupt"):
        load_checkpoint(tmp_path / "m")
    (tmp_path / "pickle").mkdir()
    torch.save({"a": torch.zeros(1)}, tmp_path / "pickle" / "model.pt")
    with pytest.raises(JobError, match="not a napari-histoai model"):
        load_checkpoint(tmp_path / "pickle")
    with pytest.raises(JobError, match="no model named"):
        load_checkpoint("does-not-exist")
    save_checkpoint(tmp_path / "m2", torch.nn.Linear(4, 2).state_dict(), {"kind": "toy"})
    with pytest.raises(JobError, match="do not fit"):
        load_state_strict(torch.nn.Linear(3, 2), load_checkpoint(tmp_path / "m2")[0])
