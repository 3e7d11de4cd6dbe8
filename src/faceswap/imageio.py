"""Reading and writing images with errors that say which file and what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceswap.errors import FaceswapError


class ImageReadError(FaceswapError, ValueError):
    """An image path that is missing, unreadable or not a decodable image."""

    exit_code = 2  # a bad argument or value: the same status as a usage error


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB; alpha is dropped and grey is expanded."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ImageReadError(f"cannot decode image {path}: {err}") from None


def write_rgb(path: str | Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB array; the format follows the suffix."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path)
