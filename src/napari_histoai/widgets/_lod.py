"""Level of detail for a whole-slide nuclei store (:mod:`..io.point_store`) in a napari viewer.

Zoomed out, density Image layers (multiscale, aligned in µm) stand for the millions of nuclei:
one RGBA layer of all classes, shown, and one per class (nuclei per mm², hidden until chosen);
zoomed in (when the view holds fewer than ``visible_max`` nuclei), ONE Points layer holds the
points of the visible region plus a margin, queried on a worker thread as the camera moves (at
most one update per ``DEBOUNCE_MS``) and swapped in place, so the correction dock's palette,
hotkeys and selection keep working on it.

Every GUI-thread step stays short: the worker also builds every per-point array the layer keeps
(napari's own dtypes: coordinates, features, face and border colours, sizes, symbols), so the
swap only assigns them and redraws once (~0.4 ms per 1000 points; napari's setters take ~4, as
they map colours and symbols point by point in Python and redraw three times); the layer list
hears of the new thumbnail in an event-loop turn of its own (it repaints every row). (Drawing
fewer of the loaded points, e.g. only those near the view, would not help: under Xvfb's software
OpenGL a frame with a visible Points layer costs the same ~30 ms more whether it draws 0 or 17k
markers.)

Edits on that layer (add, delete, move, re-class: whatever napari or the dock did) are found by
comparing the layer with what was loaded (after any layer event, and once a second: ~1 ms per
50k points when nothing changed) and written to the store, where they are durable at once. Only
Qt/napari glue lives here; the numbers are the store's.
"""

from __future__ import annotations

import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
import pandas as pd
from qtpy.QtCore import QObject, QTimer, Signal

from ..classes import color_map
from ..io.point_store import SOURCES, Points, PointStore
from ..io.point_summary import density_pyramid
from ._layers import POINT_DIAMETER_UM, placement

DEBOUNCE_MS = 100      # camera changes -> at most one region update per this interval
FLUSH_MS = 200         # a layer edit -> written to the store after this long
POLL_MS = 1000         # edits no event announced (features changed in place) are found this often
VISIBLE_MAX = 12_000   # show points when the view holds at most this many nuclei
LOAD_MAX = 30_000      # at most this many points loaded (view + margin): a swap costs ~0.4 ms per 1000
THUMBNAIL_MS = 300     # a swap's new thumbnail reaches the layer list this much later (it repaints every row)
_CONTROLLERS: "weakref.WeakValueDictionary[int, LodController]" = weakref.WeakValueDictionary()


def controller_of(layer) -> Optional["LodController"]:
    """The controller whose Points layer ``layer`` is (None for other layers)."""
    return _CONTROLLERS.get(id(layer)) if layer is not None else None


class _Geom:
    """Placement of store coordinates (level-0 px) in the viewer's world, from an image layer
    or, without one, from the store's µm/px."""

    def __init__(self, store: PointStore, image_layer=None):
        self.image_layer, self.mpp = image_layer, store.mpp

    def kw(self, downsample: float = 1.0) -> dict:
        if self.image_layer is not None:
            return placement(self.image_layer, downsample=downsample)
        s = (self.mpp or 1.0) * downsample
        off = (downsample - 1) / 2.0 * (self.mpp or 1.0)
        kw = {"scale": (s, s), "translate": (off, off)}
        if self.mpp:
            kw["units"] = ("µm", "µm")
        return kw


class LodController(QObject):
    """Attach a store to a viewer. ``points_layer`` and ``density_layers`` are the layers it
    manages; ``mode`` is ``"out"`` (density) or ``"in"`` (points); ``loaded_box`` the region
    (y0, x0, y1, x1 level-0 px) whose points the layer holds."""

    _loaded = Signal(object)
    updated = Signal(str)  # the mode, after each change of what is shown

    def __init__(self, viewer, store: PointStore, image_layer=None, name: str = "nuclei (whole slide)",
                 visible_max: int = VISIBLE_MAX, load_max: int = LOAD_MAX):
        super().__init__()
        self.viewer, self.store, self.name = viewer, store, name
        scene = getattr(viewer, "scene", None)  # napari 0.9: the camera lives on the scene
        self.camera = scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera
        self.visible_max, self.load_max = visible_max, load_max
        self.geom = _Geom(store, image_layer)
        self.mode, self.loaded_box, self.busy = "", None, False
        self._seq, self._loaded_version, self._snap, self._updating = 0, -1, None, False
        self._snap_rows = self._snap_pos = None  # the layer's ids, row by row, at the snapshot; their place in it
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="histoai-lod")
        self._counts_version = -1
        self._refresh_counts()
        self.density_layers = self._add_density_layers()
        self.points_layer = self._add_points_layer()
        _CONTROLLERS[id(self.points_layer)] = self
        self._loaded.connect(self._apply)
        self._timer = self._single_shot(DEBOUNCE_MS, self.update_view)
        self._flush_timer = self._single_shot(FLUSH_MS, self.flush)
        self._thumb_timer = self._single_shot(THUMBNAIL_MS, lambda: self.points_layer.events.thumbnail())
        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self.flush)
        self._poll.start()
        self.camera.events.zoom.connect(self._camera_moved)
        self.camera.events.center.connect(self._camera_moved)
        self.points_layer.events.data.connect(self._layer_edited)
        self.points_layer.events.features.connect(self._layer_edited)
        self.viewer.layers.events.removed.connect(self._layer_removed)
        self.update_view()

    def _single_shot(self, ms: int, slot) -> QTimer:
        t = QTimer(self)
        t.setSingleShot(True)
        t.setInterval(ms)
        t.timeout.connect(slot)
        return t

    # ------------------------------------------------------------------ layers
    def _refresh_counts(self) -> None:
        """The current per-class bin counts and the integral image of their total (for O(1)
        counts of any box)."""
        self.counts = self.store.density_counts()
        total = self.counts.sum(axis=0)
        self._integral = np.zeros((total.shape[0] + 1, total.shape[1] + 1), np.int64)
        self._integral[1:, 1:] = total.cumsum(0).cumsum(1)
        self._counts_version = self.store.version

    def _add_density_layers(self) -> list:
        from napari.utils.colormaps import Colormap

        pyr = density_pyramid(self.store, self.counts)
        unit = "mm²" if self.store.mpp else "Mpx²"
        layers, self._density_hi = [], []
        for k, (cls, rgb) in enumerate(color_map(self.store.classes).items()):
            levels = [lvl[k] for lvl in pyr]
            nz = levels[0][levels[0] > 0]
            hi = max(float(np.percentile(nz, 99.5)) if nz.size else 1.0, 1e-6)
            self._density_hi.append(hi)
            cmap = Colormap([[0, 0, 0, 0], [*rgb, 1.0]], name=f"histoai-{cls}")
            layers.append(self.viewer.add_image(
                levels, multiscale=True, name=f"{cls} density (nuclei/{unit})", colormap=cmap, blending="additive",
                contrast_limits=(0.0, hi), metadata={"point_store": str(self.store.path), "class": cls},
                visible=False, **self.geom.kw(self.store.bin)))
        # shown by default: one RGB layer of all classes (one texture to draw instead of one per class);
        # the per-class layers above hold the nuclei/mm² values (the status bar shows them) and are
        # a click away in the layer list
        layers.append(self.viewer.add_image(
            self._composite(pyr), multiscale=True, rgb=True, name="nuclei density (all classes)",
            metadata={"point_store": str(self.store.path), "class": "all"}, **self.geom.kw(self.store.bin)))
        self._shown_density = [layers[-1]]
        return layers

    def _composite(self, pyr: list) -> list:
        """RGBA uint8 levels [h, w, 4]: the class colours mixed by density (each class's density over
        its 99.5th percentile), opaque where there are many nuclei, transparent where there are none."""
        colors = np.array(list(color_map(self.store.classes).values()), np.float32)  # [K, 3]
        hi = np.array(self._density_hi, np.float32)[:, None, None]
        out = []
        for lvl in pyr:
            w = np.clip(lvl[: len(hi)] / hi, 0, 1)
            tot = w.sum(0)
            rgb = np.einsum("khw,kc->hwc", w, colors[: len(hi)]) / np.maximum(tot, 1e-6)[..., None]
            alpha = np.clip(tot, 0, 1)[..., None] * 0.9
            out.append((np.concatenate([rgb, alpha], -1) * 255).round().astype(np.uint8))
        return out

    def _add_points_layer(self):
        classes = list(self.store.classes)
        mpp = self.store.mpp
        layer = self.viewer.add_points(
            np.zeros((0, 2)), name=self.name, features=_features(Points.empty(), classes), face_color="class",
            face_color_cycle={c: (*rgb, 1.0) for c, rgb in color_map(classes).items()}, border_color="black",
            border_width=0.05, size=POINT_DIAMETER_UM / mpp if mpp else 12.0,
            metadata={"classes": classes, "mpp": mpp, "point_store": str(self.store.path)}, **self.geom.kw())
        layer.feature_defaults = {"class": classes[0], "score": 1.0, "source": "user", "store_id": -1}
        self._snap = self._snapshot(layer)
        return layer

    def _layer_removed(self, event) -> None:
        if event.value is self.points_layer:
            self.close()

    def close(self) -> None:
        """Write pending edits and stop following the viewer (the layers stay)."""
        self.flush()
        for t in (self._timer, self._flush_timer, self._poll, self._thumb_timer):
            t.stop()
        for ev, cb in ((self.camera.events.zoom, self._camera_moved),
                       (self.camera.events.center, self._camera_moved),
                       (self.viewer.layers.events.removed, self._layer_removed)):
            try:
                ev.disconnect(cb)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._pool.shutdown(wait=False)

    # ------------------------------------------------------------------ view
    def visible_box(self) -> tuple[float, float, float, float]:
        """(y0, x0, y1, x1) level-0 px the canvas shows (clipped to the slide)."""
        h_px, w_px = self.viewer.canvas.size if hasattr(self.viewer, "canvas") else (600, 800)
        cam = self.camera
        cy, cx = cam.center[-2:]
        hh, hw = h_px / cam.zoom / 2, w_px / cam.zoom / 2
        corners = np.array([self.points_layer.world_to_data([cy + dy, cx + dx])[-2:]
                            for dy in (-hh, hh) for dx in (-hw, hw)])
        (y0, x0), (y1, x1) = corners.min(0), corners.max(0)
        H, W = self.store.shape
        return max(0.0, y0), max(0.0, x0), min(float(H), y1), min(float(W), x1)

    def expected(self, box) -> int:
        """Nuclei in ``box`` as the bin counts tell (the bins it touches: an upper bound)."""
        b = self.store.bin
        gh, gw = self._integral.shape[0] - 1, self._integral.shape[1] - 1
        y0, x0 = int(np.clip(box[0] // b, 0, gh)), int(np.clip(box[1] // b, 0, gw))
        y1, x1 = int(np.clip(np.ceil(box[2] / b), 0, gh)), int(np.clip(np.ceil(box[3] / b), 0, gw))
        if y1 <= y0 or x1 <= x0:
            return 0
        s = self._integral
        return int(s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0])

    def _camera_moved(self, *_a) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def update_view(self) -> None:
        """Decide what to show for the current camera; start a region load when needed."""
        box = self.visible_box()
        if box[2] <= box[0] or box[3] <= box[1] or self.expected(box) > self.visible_max:
            self._show_out()
            return
        self._set_mode("in")
        lb = self.loaded_box
        if (lb is not None and self._loaded_version == self.store.version and lb[0] <= box[0] and lb[1] <= box[1]
                and lb[2] >= box[2] and lb[3] >= box[3]):
            return
        window = box
        for m in (1.0, 0.5, 0.25):  # margin, in view sizes on each side
            dy, dx = (box[2] - box[0]) * m, (box[3] - box[1]) * m
            w = (box[0] - dy, box[1] - dx, box[2] + dy, box[3] + dx)
            if self.expected(w) <= self.load_max:
                window = w
                break
        self._seq += 1
        self.busy = True
        self._pool.submit(self._load, self._seq, window, self.store.version, list(self.store.classes), self._style())

    def _style(self) -> dict:
        """What a new window's points look like (read in the GUI thread, used by the worker): the
        class colours of the layer's colour cycle, its current border colour, size, border width
        and symbol."""
        ly = self.points_layer
        classes = np.array(self.store.classes, dtype=object)
        return {"lut": np.asarray(ly._face.categorical_colormap.map(classes), np.float32).reshape(-1, 4),
                "border": np.asarray(ly._border.current_color if ly._border.current_color is not None
                                     else (0.0, 0.0, 0.0, 1.0), np.float32),
                "size": float(ly.current_size), "border_width": float(ly.current_border_width),
                "symbol": ly.current_symbol}

    def _load(self, seq: int, window, version: int, classes: list, style: dict) -> None:
        """Worker thread: query the store, build everything the layer will hold."""
        try:
            out = (seq, window, version, _prepare(self.store.query(*window), classes, style))
        except Exception as e:  # noqa: BLE001 - reported in the GUI thread
            out = (seq, window, version, e)
        self._loaded.emit(out)

    def _apply(self, out) -> None:
        seq, window, version, win = out
        if seq != self._seq or self.mode != "in":
            return
        self.busy = False
        if isinstance(win, Exception):
            from ._runner import notify_error

            notify_error(f"could not read the nuclei store: {win}")
            return
        self.flush()
        if self.store.version != version:  # edits written since the query: read again
            self.loaded_box = None
            self.update_view()
            return
        self._replace(win)
        self.loaded_box, self._loaded_version = window, version
        self.updated.emit("in")

    def _replace(self, win: dict) -> None:
        """Swap the layer's points for a prepared window (:func:`_prepare`), keeping the selection
        (by store id) and the feature defaults (the palette's class for new points). A new window
        of the same data, not an edit: no data event."""
        ly = self.points_layer
        sel = [i for i in sorted(ly.selected_data) if i < len(ly.data)]
        sel_ids = ly.features["store_id"].to_numpy()[sel] if sel else None
        self._updating = True
        try:
            try:
                _swap_fast(ly, win)
            except _NoFastSwap as e:  # the layer's style or napari's internals differ: napari's setters
                _warn_once(f"whole-slide points: swapping through napari's setters ({e})")
                _swap_public(ly, win)
            if sel_ids is not None and len(sel_ids):
                ly.selected_data = set(np.flatnonzero(np.isin(win["pts"].ids, sel_ids)).tolist())
            with ly.events.thumbnail.blocker():
                ly.refresh()  # the one redraw
        finally:
            self._updating = False
        self._snap, self._snap_rows, self._snap_pos = win["snapshot"], win["rows"], win["pos"]
        self._thumb_timer.start()

    def _show_out(self) -> None:
        if self.mode == "out":
            return
        self.flush()
        self._seq += 1  # drop loads in flight
        self.busy = False
        if len(self.points_layer.data):
            self._replace(_prepare(Points.empty(), list(self.store.classes), self._style()))
        self.loaded_box = None
        if self._counts_version != self.store.version:
            self._refresh_density()
        self._set_mode("out")
        self.updated.emit("out")

    def _set_mode(self, mode: str) -> None:
        if mode == self.mode:
            return
        if mode == "in":  # remember which density layers the user had on
            self._shown_density = [ly for ly in self.density_layers if ly.visible]
        self.mode = mode
        for ly in self._shown_density:
            ly.visible = mode == "out"

    def _refresh_density(self) -> None:
        """Edits change the density maps: recompute them (cheap: bin counts plus the edits)."""
        self._refresh_counts()
        pyr = density_pyramid(self.store, self.counts)
        for k, ly in enumerate(self.density_layers[:-1]):
            if ly in self.viewer.layers and k < pyr[0].shape[0]:
                ly.data = [lvl[k] for lvl in pyr]
        if self.density_layers[-1] in self.viewer.layers:
            self.density_layers[-1].data = self._composite(pyr)

    # ------------------------------------------------------------------ edits
    def _snapshot(self, ly):
        """What the layer holds, by store id (sorted): ids, yx, class, score, source."""
        ids, yx, cls, sc, src = self._values(ly)
        keep = ids >= 0
        order = np.argsort(ids[keep])
        return tuple(a[keep][order] for a in (ids, yx, cls, sc, src))

    def _values(self, ly):
        n = len(ly.data)
        f = ly.features
        if not n:
            e = Points.empty()
            return e.ids, e.yx, e.cls, e.score, e.source
        yx = np.asarray(ly.data, np.float32)[:, -2:]
        ids = pd.to_numeric(f["store_id"], errors="coerce").fillna(-1).to_numpy(np.int64) \
            if "store_id" in f else np.full(n, -1, np.int64)
        cat = pd.Categorical(f["class"]) if "class" in f else pd.Categorical([self.store.classes[0]] * n)
        lut = np.array([self.store.class_index(str(c)) for c in cat.categories] + [0], np.int16)
        cls = lut[cat.codes]
        sc = pd.to_numeric(f["score"], errors="coerce").fillna(1.0).to_numpy(np.float32) if "score" in f \
            else np.ones(n, np.float32)
        src = (pd.Categorical(f["source"]) == "user").astype(np.uint8) if "source" in f else np.ones(n, np.uint8)
        return ids, yx, cls, sc, np.asarray(src, np.uint8)

    def _layer_edited(self, *_a) -> None:
        if not self._updating:
            self._flush_timer.start()

    def flush(self) -> int:
        """Write the layer's edits since the last load or flush to the store; -> points written."""
        if self._updating or self._snap is None or self.points_layer is None:
            return 0
        ly = self.points_layer
        ids, yx, cls, sc, src = self._values(ly)
        s_ids, s_yx, s_cls, s_sc, s_src = self._snap
        rows, p = self._snap_rows, self._snap_pos
        if rows is not None and len(ids) == len(rows) and np.array_equal(ids, rows) and not (
                (yx != s_yx[p]).any() or (cls != s_cls[p]).any() or (sc != s_sc[p]).any() or (src != s_src[p]).any()):
            return 0  # the same points, row by row, unchanged (the usual case: a cheap check, no sorting)
        # a copy-pasted point carries its original's id: the first holder keeps it
        if len(ids):
            first = np.zeros(len(ids), bool)
            _, idx = np.unique(ids, return_index=True)
            first[idx] = True
            ids = np.where(first | (ids < 0), ids, -1)
        pos = np.minimum(np.searchsorted(s_ids, ids), max(len(s_ids) - 1, 0))
        known = (ids >= 0) & (s_ids[pos] == ids) if len(s_ids) else np.zeros(len(ids), bool)
        new = ~known
        moved = known & (yx != s_yx[pos]).any(1) if len(s_ids) else known
        changed = known & (moved | (cls != s_cls[pos]) | (src != s_src[pos]) | (sc != s_sc[pos])) if len(s_ids) else known
        src = np.where(moved, 1, src).astype(np.uint8)
        gone = ~np.isin(s_ids, ids[known])
        parts, dels = [], []
        if changed.any():
            parts.append(Points(ids[changed], yx[changed], cls[changed], sc[changed], src[changed]))
            dels.append(np.zeros(int(changed.sum()), bool))
        if new.any():
            rows = np.flatnonzero(new)
            new_ids = self.store.new_ids(len(rows))
            parts.append(Points(new_ids, yx[rows], cls[rows], sc[rows], src[rows]))
            dels.append(np.zeros(len(rows), bool))
            f = ly.features
            f.iloc[rows, f.columns.get_loc("store_id")] = new_ids
            ids = ids.copy()
            ids[rows] = new_ids
        if gone.any():
            parts.append(Points(s_ids[gone], s_yx[gone], s_cls[gone], s_sc[gone], s_src[gone]))
            dels.append(np.ones(int(gone.sum()), bool))
        if not parts:
            return 0
        self.store.put(Points.concat(parts), deleted=np.concatenate(dels))
        self._loaded_version = self.store.version
        order = np.argsort(ids)
        self._snap = (ids[order], yx[order], cls[order], sc[order], src[order])
        self._snap_rows, self._snap_pos = ids.copy(), _inverse(order)
        return int(sum(len(p) for p in parts))


_WARNED: set = set()


class _NoFastSwap(Exception):
    """The layer cannot take :func:`_swap_fast` (raised before anything was changed)."""


def _warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        import logging

        logging.getLogger(__name__).warning(msg)


def _features(pts: Points, classes: list) -> pd.DataFrame:
    """The layer's features table for ``pts``: class, score, source, store_id."""
    return pd.DataFrame({
        "class": pd.Categorical.from_codes(pts.cls.astype(np.int64), categories=classes),
        "score": pts.score.astype(np.float64),
        "source": pd.Categorical.from_codes(pts.source.astype(np.int64), categories=list(SOURCES)),
        "store_id": pts.ids.astype(np.int64)})


def _prepare(pts: Points, classes: list, style: dict) -> dict:
    """Everything a Points layer holds for ``pts``, in the dtypes napari keeps, so that a swap
    converts nothing (built in the worker thread): ``yx`` [N, 2] float64 level-0 px,
    ``features``, ``class_values`` (the colour cycle's property values), ``face`` / ``border``
    [N, 4] float32 RGBA, ``size`` / ``border_width`` [N] float64 (layer data units), ``symbol``
    [N] object, ``shown`` [N] bool, and what :meth:`LodController.flush` compares the layer with:
    ``snapshot`` (store ids sorted; yx float32, class, score, source), ``rows`` (the ids row by
    row) and ``pos`` (each row's place in the snapshot)."""
    n = len(pts)
    feats = _features(pts, classes)
    order = np.argsort(pts.ids)
    src = (pts.source == 1).astype(np.uint8)
    lut = style["lut"]
    cls = pts.cls.astype(np.intp)
    return {
        "pts": pts, "yx": np.ascontiguousarray(pts.yx, np.float64), "features": feats,
        "class_values": feats["class"].to_numpy(), "face": lut[np.clip(cls, 0, len(lut) - 1)],
        "border": np.repeat(style["border"][None, :], n, 0), "size": np.full(n, style["size"]),
        "border_width": np.full(n, style["border_width"]), "symbol": np.full(n, style["symbol"], dtype=object),
        "shown": np.ones(n, bool), "rows": pts.ids.astype(np.int64), "pos": _inverse(order),
        "snapshot": (pts.ids[order].astype(np.int64), np.asarray(pts.yx, np.float32)[order], pts.cls[order].astype(np.int16),
                     pts.score[order].astype(np.float32), src[order])}


def _inverse(order: np.ndarray) -> np.ndarray:
    """The inverse permutation of ``order``."""
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    return inv


def _swap_fast(ly, win: dict) -> None:
    """Give the Points layer ``ly`` the prepared window ``win`` by assigning napari's per-point
    state directly (napari 0.9: ``_data``, the feature table, the colour managers' fields, sizes,
    symbols, shown), keeping the feature defaults (the palette's class for new points; their
    ``store_id`` -1) and the colour cycle's current value. Emits
    nothing and does not redraw: the caller refreshes once. napari's setters would do the same
    but map every point's colour and symbol in Python and redraw three times."""
    from napari.layers.utils.color_manager import ColorProperties

    feats = win["features"]
    try:  # everything checked before anything changes
        ft, face, border, text = ly._feature_table, ly._face, ly._border, ly.text
        defaults = ft._defaults
        cp = face.color_properties
        for obj, names in ((ly, ("_data", "_size", "_border_width", "_symbol", "_shown", "_value", "_value_stored")),
                           (ft, ("_values",))):
            missing = [n for n in names if n not in vars(obj)]
            if missing:
                raise _NoFastSwap(f"napari's Points has no {missing}")
        if "colors" not in vars(face) or "colors" not in vars(border):
            raise _NoFastSwap("napari's colour manager keeps its colours elsewhere")
    except AttributeError as e:
        raise _NoFastSwap(str(e)) from None
    if list(defaults.columns) != list(feats.columns):
        raise _NoFastSwap("the layer's feature columns differ from the store's")
    try:  # the defaults as napari would keep them for these features (a new point is the user's: no store id)
        from napari.layers.utils.layer_utils import _validate_feature_defaults

        new_defaults = _validate_feature_defaults(_new_point_defaults(defaults), feats)
    except (ImportError, ValueError, TypeError, KeyError) as e:
        raise _NoFastSwap(f"feature defaults: {e}") from None
    if cp is None or cp.name != "class" or border.color_properties is not None or str(face.color_mode) != "cycle":
        raise _NoFastSwap("the layer's colours no longer follow the class")
    with ly.events.blocker_all(), face.events.blocker_all(), border.events.blocker_all():
        ly._data = win["yx"]
        ft._values = feats  # a RangeIndex frame: what napari's validation would make of it
        ft._defaults = new_defaults
        # pydantic models: assigning through __dict__ skips the validators that would map the colours again
        face.__dict__["color_properties"] = ColorProperties(name=cp.name, values=win["class_values"],
                                                           current_value=cp.current_value)
        face.__dict__["colors"] = win["face"]
        border.__dict__["colors"] = win["border"]
        ly._size, ly._border_width, ly._symbol = win["size"], win["border_width"], win["symbol"]
        ly._shown = win["shown"]
        ly._value = ly._value_stored = None  # the hovered point's index means another point now
        text.refresh(feats)


def _new_point_defaults(defaults: pd.DataFrame) -> dict:
    """The feature defaults (one row) as a dict, with ``store_id`` -1: a point the user adds is
    not one of the store's until :meth:`LodController.flush` gives it an id."""
    d = {c: defaults[c].iloc[0] for c in defaults.columns}
    if "store_id" in d:
        d["store_id"] = -1
    return d


def _swap_public(ly, win: dict) -> None:
    """The same as :func:`_swap_fast` through napari's public setters (slower; the fallback)."""
    defaults = _new_point_defaults(ly.feature_defaults)
    with ly.events.blocker_all(), ly._face.events.blocker_all(), ly._border.events.blocker_all():
        ly.data = win["yx"]
        ly.features = win["features"]
        try:
            ly.feature_defaults = defaults
        except (ValueError, KeyError, TypeError):
            pass
        ly.refresh_colors(update_color_mapping=False)


def add_label_pyramid(viewer, path, image_layer=None, name: str = "nuclei (labels)", metadata: Optional[dict] = None):
    """Show a whole-slide labels pyramid (:mod:`..io.label_pyramid`) as napari's multiscale Labels
    layer, aligned with ``image_layer`` (its origin and downsample on the slide are the
    pyramid's own) or, without one, placed in µm from the pyramid's pixel size. napari draws
    multiscale Labels level by level as the camera moves; it does not paint on them (napari
    issue 1587), so the layer is for viewing. ``metadata`` is added to the layer's."""
    from ..io.label_pyramid import label_pyramid_info, open_label_pyramid

    levels, mpp = open_label_pyramid(path)
    info = label_pyramid_info(path)
    if image_layer is not None:
        kw = placement(image_layer, info["origin"], info["downsample"])
    else:
        s, ds = mpp or 1.0, info["downsample"]  # µm per label px; slide px per label px
        kw = {"scale": (s, s), "translate": tuple((o + (ds - 1) / 2.0) * s / ds for o in info["origin"]),
              **({"units": ("µm", "µm")} if mpp else {})}
    md = {"label_pyramid": str(path), "mpp": mpp, **(metadata or {})}
    return viewer.add_labels(levels, multiscale=True, name=name, metadata=md, **kw)
