"""The global network is the EMA of the local one."""

import torch
from torch import nn

from napari_histoai.methods.detection.ema import ModelEMA


def test_ema_update_formula():
    torch.manual_seed(0)
    local = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(local, momentum=0.9, warmup=False)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        local[0].weight.add_(1.0)
        local[1].num_batches_tracked.fill_(7)
    ema.update(local)
    after = ema.module.state_dict()
    exp = 0.9 * before["0.weight"] + 0.1 * local[0].weight
    assert torch.allclose(after["0.weight"], exp)
    assert int(after["1.num_batches_tracked"]) == 7
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_warmup_decay():
    ema = ModelEMA(nn.Linear(2, 2), momentum=0.999)
    assert abs(ema.decay() - 0.1) < 1e-9
    ema.updates = 10_000
    assert ema.decay() == 0.999
