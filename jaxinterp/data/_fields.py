"""Signals for neural fields: the sample photographs that scikit-image ships, as pixel grids on the unit square, and
the exact signed distance of an analytic 3-D shape."""

import numpy as np

SAMPLE_IMAGES = ("camera", "astronaut", "chelsea", "coffee")
"""The scikit-image sample photographs `sample_image` reads (all shipped inside the wheel; none is downloaded)."""


def sample_image(name: str, size: int | None = None) -> np.ndarray:
    """A scikit-image sample photograph with values in `[0, 1]`.

    **Arguments:**

    - `name`: one of `SAMPLE_IMAGES`.
    - `size`: if given, the central square crop resized (area-averaged) to `size x size`; else the full image.

    **Returns:** float32 `[height, width, channels]` (1 channel for grey images, 3 for colour).
    """
    import skimage.data
    import skimage.transform

    if name not in SAMPLE_IMAGES:
        raise ValueError(f"unknown sample image {name!r}; expected one of {', '.join(SAMPLE_IMAGES)}")
    image = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
    if image.ndim == 2:
        image = image[..., None]
    if size is not None:
        if not isinstance(size, int) or size < 2:
            raise ValueError(f"size must be an integer >= 2 or None, got {size!r}")
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        image = image[top : top + side, left : left + side]
        image = skimage.transform.resize(image, (size, size), anti_aliasing=True, order=1).astype(np.float32)
    return image


def pixel_grid(height: int, width: int) -> np.ndarray:
    """The centres of a `height x width` pixel grid on the unit square, `[height * width, 2]` float32, row-major,
    each point `(row, column)`."""
    rows = (np.arange(height) + 0.5) / height
    columns = (np.arange(width) + 0.5) / width
    return np.stack(np.meshgrid(rows, columns, indexing="ij"), axis=-1).reshape(-1, 2).astype(np.float32)


def torus_distance(points: np.ndarray, major: float = 0.3, minor: float = 0.1) -> np.ndarray:
    """The exact signed distance (negative inside) from points to a torus centred at `(0.5, 0.5, 0.5)` in the plane of
    the first two axes: `sqrt((sqrt(p_0^2 + p_1^2) - major)^2 + p_2^2) - minor` with `p = x - 0.5`.

    **Arguments:** `points` `[n, 3]`; `major`, `minor`, the radii (`0 < minor < major`).

    **Returns:** `[n]` float32.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"torus_distance: points must have shape [n, 3], got {points.shape}")
    if not 0 < minor < major:
        raise ValueError(f"torus_distance: need 0 < minor < major, got minor={minor}, major={major}")
    p = points - 0.5
    ring = np.hypot(p[:, 0], p[:, 1]) - major
    return (np.hypot(ring, p[:, 2]) - minor).astype(np.float32)
