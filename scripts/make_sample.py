"""Build the bundled sample ``resources/sample_he.tif``: a 1024 x 1024 crop of OpenSlide's
``CMU-1-Small-Region.svs`` (CC0 / free to redistribute), 20x, 0.499 µm/px, written as a tiled
JPEG OME-TIFF with a SubIFD pyramid.

    python scripts/make_sample.py [--data ../shared/data]
"""

import argparse
from pathlib import Path

from napari_histoai.io import open_image
from napari_histoai.io.writers import write_pyramid_ometiff

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    a = ap.parse_args()
    src = open_image(Path(a.data) / "slides" / "CMU-1-Small-Region.svs")
    y0, x0 = 1200, 600
    crop = src.read_region(y0, x0, y0 + 1024, x0 + 1024)
    out = write_pyramid_ometiff(ROOT / "resources" / "sample_he.tif", crop, mpp=src.mpp, tile=256, min_size=256)
    print(out, out.stat().st_size // 1024, "KiB")
