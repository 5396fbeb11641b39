"""Source tiles of the tumour / normal mosaics: which real labelled tiles are tumour or non-tumour
sources (:func:`source_pools`, disjoint train / eval pools), loading them (:func:`load_tiles`),
and drawing tissue-rich random crops from them (:class:`TileBank`).

The rules are described in :mod:`napari_histoai.devdata.tumour_mosaics`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import JobError

KATHER_TUMOUR = "TUM"
KATHER_NORMAL = ("NORM", "STR", "LYM", "MUS", "MUC", "DEB")
CRC_MIN_EPI_FRACTION = 0.6  # of classified (non-"unlabeled") nuclei
CRC_MIN_EPI = 30
CROP_MIN, CROP_MAX = 192, 256  # crop side, level-0 px (Kather tiles give at most 224)
MAX_BLANK = 0.35  # at most this fraction of a crop may be glass-like

Pools = dict  # {"train" | "eval": {"tumour": [rel path], "normal": [rel path]}}


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _crc_kind(points_csv: Path) -> str | None:
    """``tumour``, ``normal`` or None (not used) for a crchisto tile, from its nucleus classes."""
    classes = [r.get("class", "") for r in _read_csv(points_csv)]
    n_epi = sum(c == "epithelial" for c in classes)
    n_cls = sum(c not in ("", "unlabeled") for c in classes)
    if n_epi == 0:
        return "normal"
    if n_epi >= CRC_MIN_EPI and n_epi >= CRC_MIN_EPI_FRACTION * n_cls:
        return "tumour"
    return None


def source_pools(data_dir: str | os.PathLike) -> Pools:
    """Disjoint train / eval pools of source tiles, as paths relative to ``data_dir`` (posix).

    Returns ``{"train": {"tumour": [...], "normal": [...]}, "eval": {...}}``, each list sorted.
    Raises ``JobError`` (one line) when ``data_dir`` lacks the needed files.
    """
    data = Path(data_dir)
    need = [data / "tissue_tiles" / "labels.csv", data / "tissue_tiles" / "images",
            data / "crchisto" / "train" / "images", data / "crchisto" / "train" / "points",
            data / "crchisto" / "val" / "images", data / "crchisto" / "val" / "points"]
    for p in need:
        if not p.exists():
            raise JobError(f"{p} not found: {data} is not the shared data folder (set --data or HISTOAI_DATA)")
    pools: Pools = {s: {"tumour": [], "normal": []} for s in ("train", "eval")}

    by_class: dict[str, list[str]] = {}
    for row in _read_csv(data / "tissue_tiles" / "labels.csv"):
        if row.get("class") in KATHER_NORMAL + (KATHER_TUMOUR,):
            by_class.setdefault(row["class"], []).append(row["file"])
    for cls, files in sorted(by_class.items()):
        kind = "tumour" if cls == KATHER_TUMOUR else "normal"
        for i, name in enumerate(sorted(files)):
            rel = f"tissue_tiles/images/{name}"
            if not (data / rel).is_file():
                raise JobError(f"{data / rel} not found (listed in tissue_tiles/labels.csv)")
            pools["eval" if i % 2 == 1 else "train"][kind].append(rel)

    for split in ("train", "val"):
        images = sorted(p.name for p in (data / "crchisto" / split / "images").glob("*.png"))
        kinds: dict[str, list[str]] = {"tumour": [], "normal": []}
        for name in images:
            pts = data / "crchisto" / split / "points" / (Path(name).stem + ".csv")
            if not pts.is_file():
                raise JobError(f"{pts} not found: crchisto/{split} needs a points file per image")
            kind = _crc_kind(pts)
            if kind is not None:
                kinds[kind].append(name)
        for kind, names in kinds.items():
            for i, name in enumerate(names):
                to_eval = split == "val" or i % 3 == 2
                pools["eval" if to_eval else "train"][kind].append(f"crchisto/{split}/images/{name}")

    for split, kinds in pools.items():
        for kind, files in kinds.items():
            if not files:
                raise JobError(f"no {kind} source tiles for the {split} pool in {data}")
            files.sort()
    return pools


def load_tiles(data_dir: str | os.PathLike, files: Sequence[str]) -> dict[str, np.ndarray]:
    """RGB uint8 tiles [h, w, 3] of the given paths relative to ``data_dir``, by path."""
    from PIL import Image

    out = {}
    for rel in files:
        try:
            with Image.open(Path(data_dir) / rel) as im:
                out[rel] = np.asarray(im.convert("RGB"))
        except OSError as e:
            raise JobError(f"cannot read source tile {rel}: {e}") from None
    return out


def _dataset(rel: str) -> str:
    return "kather" if rel.startswith("tissue_tiles/") else "crchisto"


class TileBank:
    """Source tiles by path (RGB uint8 [h, w, 3]) and where they are glass-like: some source tiles
    (crchisto tiles without epithelium, Kather MUC) are largely blank, and a blank crop would be a
    glass hole inside the tissue, so crops are drawn where at most :data:`MAX_BLANK` of the crop
    is glass-like (the complement of the rule of
    :func:`~napari_histoai.engine.tissue.tissue_mask_from_rgb`)."""

    def __init__(self, tiles: dict[str, np.ndarray]):
        self.tiles = tiles
        self._integral: dict[str, np.ndarray] = {}
        self._usable: dict[str, bool] = {}

    def integral(self, rel: str) -> np.ndarray:
        """Summed-area table [h/4 + 1, w/4 + 1] of the glass-like fraction per 4 x 4 px block."""
        if rel not in self._integral:
            r, g, b = (self.tiles[rel][..., i] for i in range(3))  # (reductions over a size-3 axis are slow)
            mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
            bright = r.astype(np.int16) + g + b >= 3 * 220
            blank = bright & ((mx - mn).astype(np.int16) * 25 <= 2 * mx.astype(np.int16))  # range <= 0.08 max
            h, w = blank.shape[0] // 4 * 4, blank.shape[1] // 4 * 4
            frac = blank[:h, :w].reshape(h // 4, 4, w // 4, 4).sum(axis=(1, 3), dtype=np.int32) / np.float32(16)
            self._integral[rel] = np.pad(frac.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        return self._integral[rel]

    def blank_fraction(self, rel: str, ty: int, tx: int, s: int) -> float:
        """Glass-like fraction of the crop [ty:ty+s, tx:tx+s] (on 4 px blocks)."""
        ii = self.integral(rel)
        y0, x0, y1, x1 = ty // 4, tx // 4, (ty + s) // 4, (tx + s) // 4
        n = max(1, (y1 - y0) * (x1 - x0))
        return float(ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]) / n

    def usable(self, rel: str) -> bool:
        """Whether some :data:`CROP_MIN` crop (on a 4 px grid) is at most MAX_BLANK glass-like."""
        if rel not in self._usable:
            h, w = self.tiles[rel].shape[:2]
            ii, k = self.integral(rel), min(CROP_MIN, h, w) // 4
            sums = ii[k:, k:] - ii[:-k, k:] - ii[k:, :-k] + ii[:-k, :-k]
            self._usable[rel] = bool(sums.min() <= MAX_BLANK * k * k)
        return self._usable[rel]

    def usable_files(self, files: Sequence[str]) -> list[str]:
        out = [f for f in files if self.usable(f)]
        if not out:
            raise JobError("no source tile of a pool has enough tissue for crops")
        return out

    def crop(self, rng: np.random.Generator, rel: str, s: int, tries: int = 12) -> np.ndarray | None:
        """A random s x s crop (s clipped to the tile), rotated by k * 90° and maybe flipped, at most
        MAX_BLANK glass-like; None when ``tries`` positions all fail."""
        tile = self.tiles[rel]
        s = min(s, tile.shape[0], tile.shape[1])
        for _ in range(tries):
            ty = int(rng.integers(0, tile.shape[0] - s + 1))
            tx = int(rng.integers(0, tile.shape[1] - s + 1))
            if self.blank_fraction(rel, ty, tx, s) <= MAX_BLANK:
                crop = np.rot90(tile[ty:ty + s, tx:tx + s], int(rng.integers(4)))
                return crop[:, ::-1] if rng.random() < 0.5 else crop


def _pick_files(rng: np.random.Generator, files: Sequence[str], k: int) -> list[str]:
    """``k`` files (fewer if the dataset has fewer) of one dataset, each dataset equally likely, so
    tumour and non-tumour textures have the same mix of stain styles."""
    groups: dict[str, list[str]] = {}
    for f in sorted(files):
        groups.setdefault(_dataset(f), []).append(f)
    names = sorted(groups)
    group = groups[names[int(rng.integers(len(names)))]]
    idx = rng.choice(len(group), size=min(k, len(group)), replace=False)
    return [group[i] for i in sorted(idx)]
