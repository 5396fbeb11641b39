"""AC-Former configurations: ``paper`` (the authors' GPU setting), ``compact`` (same algorithm,
small enough to train on 2 CPU cores in about an hour) and ``tiny`` (unit tests).

A config is one flat dataclass; ``to_dict``/``from_dict`` round-trip it through a model's JSON
config (unknown keys are rejected with a clear error, missing keys take defaults). Every value is
checked against its field's type and range (:func:`check_fields`, ``RULES``): a mistyped
config.json gives one line naming the field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from ...errors import JobError
from ..config_fields import NON_NEGATIVE, POSITIVE, UNIT, check_fields, has_type, one_of

__all__ = ["ACFormerConfig", "CONFIGS", "get_config", "CLASSES"]

CLASSES = ["epithelial", "inflammatory", "fibroblast", "others"]

BACKBONES = ("resnet18", "resnet34", "resnet50", "convnext_tiny", "convnext_base")
VIEWS = ("aat", "affine", "crop", "none")
PARTNERS = ("argmin", "random", "euclidean")


def _stages_ok(v) -> bool:
    return len(v) > 0 and all(has_type(s, int) and 1 <= s <= 4 for s in v)


def _classes_ok(v) -> bool:
    return len(v) > 0 and all(isinstance(c, str) and c for c in v) and len(set(v)) == len(v)


def _spread_ok(v) -> bool:
    return len(v) == 2 and all(isinstance(r, (list, tuple)) and len(r) == 3 and all(has_type(x, float) and x >= 0 for x in r)
                               for r in v)


def _stain_ok(v) -> bool:
    return len(v) == 2 and all(isinstance(r, (list, tuple)) and len(r) == 3 and all(has_type(x, float) for x in r)
                               for r in v) and all(x >= 0 for x in v[1])


RULES = {
    **{k: POSITIVE for k in ("d_model", "n_heads", "n_points", "ffn_dim", "dec_layers", "num_queries",
                             "query_ref_size", "gn_groups", "crop_size", "batch_images", "n_views", "view_size",
                             "aat_patch", "aat_embed", "aat_heads", "aat_blocks", "aat_input", "steps", "tile_size",
                             "mpp", "lr", "fusestyle_alpha", "dense_sigma", "lr_dense_mult")},
    **{k: NON_NEGATIVE for k in ("extra_levels", "enc_layers", "pos_scale", "global_warmup", "warmup_steps",
                                 "overlap", "color_jitter", "hed_jitter", "global_weight", "cost_class", "cost_point",
                                 "loss_class", "loss_point", "focal_gamma", "weight_decay", "grad_clip",
                                 "min_distance", "lr_transformer_mult", "lr_aat_mult", "dense_weight",
                                 "dense_backbone_lr_mult")},
    **{k: UNIT for k in ("dropout", "fusestyle_p", "ema_momentum", "teacher_threshold", "focal_alpha", "lr_drop",
                         "score_threshold", "dense_mix")},
    "backbone": one_of(BACKBONES),
    "views": one_of(VIEWS),
    "fusestyle_partner": one_of(PARTNERS),
    "backbone_stages": (_stages_ok, "a non-empty list of backbone stages in 1..4"),
    "classes": (_classes_ok, "a non-empty list of distinct class names"),
    "stain_target": (_stain_ok, "null or [[mean OD R, G, B], [std OD R, G, B]]"),
    "stain_spread": (_spread_ok, "null or two rows of 3 non-negative numbers (spread of the training stains)"),
    "stain_radius": (lambda v: v >= 0, "null or a non-negative number"),
    "stain_matched_shift": (lambda v: -1 <= v <= 1, "a number in [-1, 1]"),
    "dense_class_weights": (lambda v: len(v) > 0 and all(has_type(x, float) and x >= 0 for x in v),
                            "null or a list of non-negative numbers, one per class"),
}
# (field, field it must divide, why)
DIVIDES = [("n_heads", "d_model", "attention heads"), ("gn_groups", "d_model", "GroupNorm"),
           ("aat_heads", "aat_embed", "AAT attention heads")]


@dataclass
class ACFormerConfig:
    # --- architecture ---------------------------------------------------------------------
    backbone: str = "resnet18"          # torchvision architecture, built with weights=None
    backbone_stages: tuple = (2, 3)     # 1-based stages whose outputs feed the transformer
    extra_levels: int = 1               # stride-2 convs on the last stage -> extra levels
    d_model: int = 96                   # transformer width d
    n_heads: int = 4
    n_points: int = 4                   # sampling points per head and level
    ffn_dim: int = 384
    dropout: float = 0.0
    enc_layers: int = 2
    dec_layers: int = 2
    num_queries: int = 300              # top-n encoder proposals per query_ref_size**2 px
    query_ref_size: int = 256           # (scaled by input area, training views and inference)
    gn_groups: int = 16                 # GroupNorm groups of the input projections
    pos_scale: int = 0                  # 0: position embeddings relative to the input size (Deformable
                                        # DETR); > 0: in units of pos_scale px, the same at any input size
    classes: list = field(default_factory=lambda: list(CLASSES))
    fusestyle: bool = True              # FuseStyle after the first and last backbone stage used
    fusestyle_partner: str = "argmin"   # argmin | random | euclidean
    fusestyle_p: float = 0.5
    fusestyle_alpha: float = 0.3
    # --- dense auxiliary head (dense_head.py): centre maps at stride 4 on backbone stages 1-3 ---
    dense_head: bool = False
    dense_only: bool = False            # train the dense head alone (the rest frozen, BatchNorm statistics kept)
    dense_weight: float = 1.0           # weight of its loss (on the ground truth only, not the global loss)
    dense_sigma: float = 4.0            # Gaussian of its centre targets (px at mpp)
    dense_mix: float = 0.5              # inference: weight of the head in the fused score (0 = queries only)
    dense_class_weights: list = None    # per-class weights of its cross-entropy (None = equal)
    dense_backbone_lr_mult: float = 0.0  # with dense_only: the backbone also learns, at lr * this (0 = frozen;
                                        # BatchNorm statistics kept). The transformer is then stale: head only
    # --- data -----------------------------------------------------------------------------
    mpp: float = 0.5                    # µm/px the model works at (CRCHistoPhenotypes 20x)
    crop_size: int = 256                # training crop (px at mpp) fed to the global network
    batch_images: int = 2               # images (crops) per step
    color_jitter: float = 0.1
    hed_jitter: float = 0.0             # stain jitter in HED space (data.hed_jitter; Tellez et al. 0.05); 0 = off
    # --- views: AAT and its alternatives --------------------------------------------------
    views: str = "aat"                  # aat | affine | crop | none
    n_views: int = 4                    # M
    view_size: int = 128                # side of each warped view (px)
    aat_patch: int = 4                  # AAT patch embedding kernel = stride
    aat_embed: int = 48                 # E
    aat_heads: int = 4
    aat_blocks: int = 1
    aat_input: int = 128                # the AAT looks at the crop resized to this side
    # --- global (EMA) network -------------------------------------------------------------
    global_loss: bool = True
    ema_momentum: float = 0.999
    global_weight: float = 0.1          # alpha in eq. 1 (METHODS: 0.1-0.5)
    global_warmup: int = 1000           # steps before the global loss is switched on (after the lr drop)
    teacher_threshold: float = 0.2      # keep teacher points with max class prob >= this (code: 0.1-0.3)
    # --- loss / matcher -------------------------------------------------------------------
    cost_class: float = 2.0
    cost_point: float = 5.0
    loss_class: float = 2.0
    loss_point: float = 5.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # --- optimisation ---------------------------------------------------------------------
    lr: float = 1e-3
    lr_transformer_mult: float = 1.0    # paper: 0.1 for transformer and AAT (with a pretrained backbone)
    lr_aat_mult: float = 0.1
    lr_dense_mult: float = 1.0          # the dense head's lr = lr * this
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    steps: int = 1600
    warmup_steps: int = 100
    lr_drop: float = 0.6                # lr x0.1 after this fraction of the steps
    # --- inference ------------------------------------------------------------------------
    score_threshold: float = 0.5
    min_distance: float = 0.0           # optional merge of points closer than this (px); 0 = off
    tile_size: int = 128                # the network's input window at inference = the training view
    overlap: int = 32                   # size (sine position embeddings and point refinement are relative
                                        # to the input); overlap of neighbouring windows (px)
    windowed: bool = False              # backbone once per large tile, transformer on tile_size windows
    stain_target: list = None           # [[mean OD R, G, B], [std OD R, G, B]] of the training images;
                                        # inputs are matched to it (methods/stain.py); None = off
    stain_spread: list = None           # [2, 3] spread of the training images' statistics and the radius
    stain_radius: float = None          # (rms z-score) within which an input is left unmatched; None = match all
    stain_matched_shift: float = 0.0    # added to score_threshold for inputs outside that radius (matched to the
                                        # training stain): the head is less sure on unfamiliar stains

    def to_dict(self) -> dict:
        d = asdict(self)
        d["backbone_stages"] = list(self.backbone_stages)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ACFormerConfig":
        """A validated config from a model's JSON ``architecture`` (see :meth:`validate`);
        unknown keys, a non-object or a bad value give one line."""
        if not isinstance(d, dict):
            raise JobError(f"an AC-Former config must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise JobError(f"unknown AC-Former config keys: {', '.join(unknown)}")
        if isinstance(d.get("backbone_stages"), list):
            d = {**d, "backbone_stages": tuple(d["backbone_stages"])}
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """One-line JobError naming the first bad field: a value of the wrong type (from the
        field's annotation), out of its range (``RULES``: positive sizes, probabilities in
        [0, 1], known backbone / view / partner names...), d_model and aat_embed not multiples of 4
        (sine position embeddings), or a head / group count that does not divide its width."""
        check_fields(self, RULES, "AC-Former config")
        for part, whole, why in DIVIDES:
            if getattr(self, whole) % getattr(self, part):
                raise JobError(f"AC-Former config field {part!r} must divide {whole} ({getattr(self, whole)}) "
                               f"for the {why}, got {getattr(self, part)}")
        for name in ("d_model", "aat_embed"):
            if getattr(self, name) % 4:
                raise JobError(f"AC-Former config field {name!r} must be a multiple of 4 (sine position "
                               f"embeddings), got {getattr(self, name)}")
        if self.dense_class_weights is not None and len(self.dense_class_weights) != len(self.classes):
            raise JobError(f"AC-Former config field 'dense_class_weights' needs one weight per class "
                           f"({len(self.classes)}), got {len(self.dense_class_weights)}")
        if self.dense_backbone_lr_mult > 0 and self.dense_mix < 1:
            raise JobError("AC-Former config field 'dense_mix' must be 1 when the backbone was tuned for the dense "
                           "head (dense_backbone_lr_mult > 0): the transformer no longer fits the backbone")
        if self.overlap >= self.tile_size:
            raise JobError(f"AC-Former config field 'overlap' must be smaller than tile_size ({self.tile_size}), "
                           f"got {self.overlap}")

    def replace(self, **kw) -> "ACFormerConfig":
        cfg = replace(self, **kw)
        cfg.validate()
        return cfg

    @property
    def n_levels(self) -> int:
        return len(self.backbone_stages) + self.extra_levels


CONFIGS = {
    # the authors' setting: ConvNeXt-B stages 1..3 (0-based; strides 8-32) + 1 extra level, d=256, 3+3 layers
    "paper": ACFormerConfig(
        backbone="convnext_base", backbone_stages=(2, 3, 4), extra_levels=1, d_model=256,
        n_heads=8, n_points=4, ffn_dim=1024, dropout=0.1, enc_layers=3, dec_layers=3,
        num_queries=1000, query_ref_size=256, gn_groups=32, crop_size=256, batch_images=4,
        n_views=4, view_size=256, aat_embed=120, aat_heads=12, aat_input=256, global_weight=0.3,
        global_warmup=5000, teacher_threshold=0.3, lr=2e-4, lr_transformer_mult=0.1,
        lr_aat_mult=0.1, weight_decay=1e-4, steps=100000, warmup_steps=0, lr_drop=0.8,
        score_threshold=0.5, tile_size=256, overlap=48,
    ),
    # CPU budget: resnet18 stages 2-3 (strides 8, 16) + one extra level (stride 32)
    "compact": ACFormerConfig(),
    # unit tests: seconds
    "tiny": ACFormerConfig(
        backbone="resnet18", backbone_stages=(2,), extra_levels=1, d_model=32, n_heads=2,
        n_points=2, ffn_dim=64, enc_layers=1, dec_layers=1, num_queries=60, query_ref_size=128,
        gn_groups=8, crop_size=128, batch_images=2, n_views=2, view_size=64, aat_embed=16,
        aat_heads=2, aat_input=64, global_warmup=5, steps=40, warmup_steps=0, tile_size=128,
        overlap=16,
    ),
}


def get_config(name: str, **overrides) -> ACFormerConfig:
    if name not in CONFIGS:
        raise JobError(f"unknown config {name!r}; choose one of {', '.join(CONFIGS)}")
    return CONFIGS[name].replace(**overrides)
