"""AC-Former network outputs, checkpoint round trip, and clear errors for bad checkpoints."""

import json

import numpy as np
import pytest
import torch

from napari_histoai.errors import JobError
from napari_histoai.methods.detection.configs import ACFormerConfig, get_config
from napari_histoai.methods.detection.model import build_model
from napari_histoai.methods.detection.predict import KIND, load_acformer
from napari_histoai.models import save_checkpoint


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    return cfg, build_model(cfg).eval()


def test_forward_shapes(tiny):
    cfg, model = tiny
    x = torch.rand(2, 3, 128, 96)
    out = model(x)
    q = model.num_queries_for(128, 96)
    K = len(cfg.classes)
    assert out["pred_logits"].shape == (2, q, K) and out["pred_points"].shape == (2, q, 2)
    assert len(out["aux_outputs"]) == cfg.dec_layers - 1
    s = out["enc_outputs"]["pred_logits"].shape[1]
    assert s == (128 // 8) * (96 // 8) + (128 // 16) * (96 // 16)
    assert ((out["pred_points"] >= 0) & (out["pred_points"] <= 1)).all()


def test_config_round_trip_and_unknown_keys():
    cfg = get_config("compact")
    assert ACFormerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(JobError, match="unknown AC-Former config keys"):
        ACFormerConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(JobError):
        get_config("compact", views="mixup")
    assert get_config("paper").backbone == "convnext_base" and get_config("paper").d_model == 256


def _save(tmp_path, model, cfg, name="m"):
    return save_checkpoint(tmp_path / name, model.state_dict(),
                           {"kind": KIND, "architecture": cfg.to_dict(), "classes": cfg.classes, "mpp": cfg.mpp})


def test_checkpoint_round_trip(tiny, tmp_path):
    cfg, model = tiny
    folder = _save(tmp_path, model, cfg)
    det = load_acformer(folder, device="cpu", threshold=0.0)
    for k, v in model.state_dict().items():
        assert torch.equal(det.model.state_dict()[k], v)
    assert det.classes == cfg.classes and det.mpp == cfg.mpp
    tiles = [np.random.default_rng(0).integers(0, 255, (100, 90, 3), dtype=np.uint8),
             np.full((64, 64, 3), 200, np.uint8)]
    res = det.predict_tiles(tiles)
    assert len(res) == 2
    for (p, c, s), t in zip(res, tiles):
        assert p.shape[1] == 2 and p.dtype == np.float32 and c.dtype == np.int64 and len(s) == len(p)
        assert (p[:, 0] < t.shape[0]).all() and (p[:, 1] < t.shape[1]).all()


def test_corrupt_and_foreign_checkpoints(tiny, tmp_path):
    cfg, model = tiny
    folder = _save(tmp_path, model, cfg, "corrupt")
    (folder / "weights.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(JobError, match="corrupt"):
        load_acformer(folder, device="cpu")
    foreign = _save(tmp_path, model, cfg, "foreign")
    c = json.loads((foreign / "config.json").read_text())
    c["kind"] = "contrastive-segmenter"
    (foreign / "config.json").write_text(json.dumps(c))
    with pytest.raises(JobError, match="not a 'acformer-detector'"):
        load_acformer(foreign, device="cpu")
    other = _save(tmp_path, model, cfg, "mismatch")
    c = json.loads((other / "config.json").read_text())
    c["architecture"]["d_model"] = 64
    (other / "config.json").write_text(json.dumps(c))
    with pytest.raises(JobError, match="do not fit"):
        load_acformer(other, device="cpu")
    with pytest.raises(JobError):
        load_acformer(tmp_path / "does-not-exist", device="cpu")


def test_user_backbone_weights(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    from napari_histoai.methods.detection.backbone import Backbone

    ref = torchvision.models.resnet18(weights=None)
    sd = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    save_file(sd, str(tmp_path / "r18.safetensors"))
    bb = Backbone("resnet18", (2,), weights_path=str(tmp_path / "r18.safetensors"))
    assert torch.equal(bb.body[1][0].conv1.weight, ref.layer2[0].conv1.weight)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(JobError):
        Backbone("resnet18", (2,), weights_path=str(tmp_path / "bad.pt"))


def test_pixel_position_embeddings_do_not_depend_on_input_size():
    torch.manual_seed(0)
    cfg = get_config("tiny", pos_scale=64)
    model = build_model(cfg).eval()
    small = model.features(torch.rand(1, 3, 64, 64))[1][0]   # [S, d]
    big = model.features(torch.rand(1, 3, 128, 128))[1][0]
    # the top-left stride-8 token of both inputs sits at the same pixel -> same embedding
    assert torch.allclose(small[0], big[0], atol=1e-5)
    rel = build_model(get_config("tiny")).eval()
    assert not torch.allclose(rel.features(torch.rand(1, 3, 64, 64))[1][0][0], rel.features(torch.rand(1, 3, 128, 128))[1][0][0])


def test_whole_image_detection_runs_at_the_models_tile_size(tiny):
    """A 300 px image is cut into the model's 128 px tiles (the size its position embeddings were
    trained at), never fed whole: whole-image scoring once dropped F_d from 0.67 to 0.03."""
    from napari_histoai.engine.inference import infer_array
    from napari_histoai.methods.detection.predict import ACFormerDetector

    cfg, model = tiny
    det = ACFormerDetector(model, cfg.replace(tile_size=128, overlap=16), threshold=0.0)
    seen = []
    orig = det.predict_tiles
    det.predict_tiles = lambda tiles: (seen.extend(t.shape[:2] for t in tiles), orig(tiles))[1]
    img = (np.random.default_rng(0).random((300, 300, 3)) * 255).astype(np.uint8)
    yx, cls, score = infer_array(det, img).arrays()
    assert len(seen) > 1 and max(max(s) for s in seen) <= 128
    assert len(yx) == len(cls) == len(score) and len(yx) > 0
    assert (yx >= -0.5).all() and (yx < 299.5).all()
