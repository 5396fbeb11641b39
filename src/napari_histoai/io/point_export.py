"""Exports streamed from a nuclei store (:mod:`.point_store`), never from what a viewer has
loaded: the same CSV (``y,x,class,score,source`` level-0 px, plus ``y_um,x_um,mpp`` with a pixel
size) and QuPath GeoJSON as :mod:`.points` writes, chunk by chunk, so millions of nuclei never sit
in memory as Python objects at once. Files are written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..classes import class_color
from .atomic import atomic_write
from .point_store import SOURCES, PointStore

__all__ = ["export_store_csv", "export_store_geojson", "export_store"]


def export_store_csv(store: PointStore, path: str | os.PathLike) -> Path:
    """CSV of every current point; rows in the store's (spatial) order."""
    mpp, names = store.mpp, list(store.classes)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write("y,x,class,score,source" + (",y_um,x_um,mpp\n" if mpp else "\n"))
            for p in store.iter_points():
                y, x = p.yx[:, 0].astype(float), p.yx[:, 1].astype(float)
                cls, sc, src = p.cls.tolist(), p.score.astype(float).tolist(), p.source.tolist()
                if mpp:
                    m = f"{mpp:g}"
                    fh.writelines(f"{a:.2f},{b:.2f},{_q(names[c])},{s:.4f},{SOURCES[o]},{a * mpp:.3f},{b * mpp:.3f},{m}\n"
                                  for a, b, c, s, o in zip(y.tolist(), x.tolist(), cls, sc, src))
                else:
                    fh.writelines(f"{a:.2f},{b:.2f},{_q(names[c])},{s:.4f},{SOURCES[o]}\n"
                                  for a, b, c, s, o in zip(y.tolist(), x.tolist(), cls, sc, src))

    return atomic_write(path, write, suffix=".csv")


def _q(name: str) -> str:
    return name if not any(ch in name for ch in ',"\n\r') else '"' + name.replace('"', '""') + '"'


def export_store_geojson(store: PointStore, path: str | os.PathLike, model: str | None = None) -> Path:
    """QuPath GeoJSON (one Point detection per nucleus, class colour, score measurement, the
    pixel size in the collection's properties), as :func:`.points.write_points_geojson`."""
    names = list(store.classes)
    cls_json = [json.dumps({"name": str(c), "color": [int(round(255 * v)) for v in class_color(c, i)]})
                for i, c in enumerate(names)]
    props = {"units": "pixels", **({"mpp": store.mpp} if store.mpp else {}), **({"model": model} if model else {})}

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write('{"type": "FeatureCollection", "features": [')
            first = True
            for p in store.iter_points():
                ys, xs = p.yx[:, 0].astype(float).tolist(), p.yx[:, 1].astype(float).tolist()
                parts = [f'{{"type": "Feature", "geometry": {{"type": "Point", "coordinates": [{round(x, 2)!r}, '
                         f'{round(y, 2)!r}]}}, "properties": {{"objectType": "detection", "classification": '
                         f'{cls_json[c]}, "measurements": {{"score": {round(s, 4)!r}}}}}}}'
                         for y, x, c, s in zip(ys, xs, p.cls.tolist(), p.score.astype(float).tolist())]
                if parts:
                    fh.write(("" if first else ", ") + ", ".join(parts))
                    first = False
            fh.write(f'], "properties": {json.dumps(props)}}}')

    return atomic_write(path, write, suffix=".geojson")


def export_store(store: PointStore, path: str | os.PathLike, model: str | None = None) -> Path:
    """CSV or GeoJSON by the file's extension."""
    if str(path).lower().endswith((".geojson", ".json")):
        return export_store_geojson(store, path, model)
    return export_store_csv(store, path)
