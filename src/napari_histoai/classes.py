"""Nucleus class names and their display colours (shared by layers, exports and the palette)."""

from __future__ import annotations

# RGB in 0..1; chosen to be distinguishable on H&E and for common colour-vision deficiencies
KNOWN_COLORS = {
    "epithelial": (0.90, 0.16, 0.16),
    "inflammatory": (0.10, 0.75, 0.20),
    "fibroblast": (0.15, 0.45, 0.95),
    "others": (0.98, 0.80, 0.10),
    "nucleus": (0.00, 0.85, 0.90),
    "unlabeled": (0.75, 0.75, 0.75),
}
_PALETTE = [
    (0.80, 0.30, 0.85), (1.00, 0.55, 0.10), (0.40, 0.90, 0.70), (0.55, 0.35, 0.20),
    (0.95, 0.50, 0.70), (0.50, 0.50, 1.00),
]


def class_color(name: str, index: int = 0) -> tuple[float, float, float]:
    """Display colour (r, g, b in 0..1) of a class name; unknown names cycle a palette."""
    return KNOWN_COLORS.get(str(name).lower(), _PALETTE[index % len(_PALETTE)])


def color_map(names) -> dict[str, tuple[float, float, float]]:
    return {n: class_color(n, i) for i, n in enumerate(names)}
