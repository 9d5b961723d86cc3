"""Colour given as numbers (a HEIF's nclx box) rather than an ICC profile, converted to sRGB.

A phone's HEIC may say "Display P3" with nclx alone: its primaries' chromaticities, a transfer
curve and a matrix. pillow-heif undoes the matrix (YCbCr to RGB) and hands the rest over in
`info["nclx_profile"]`; read as if it were sRGB, a P3 photo looks washed out (PhotoPrism #1522).
Here the pixels go to linear light, through XYZ (white points adapted by Bradford when they
differ) to linear sRGB, and back through the sRGB curve; colours outside sRGB are clipped.

Standard-range curves only: sRGB's (13) and the BT.709 family's (1, 6, 14, 15), decoded with the
sRGB curve as browsers and viewers do for still photos. HDR curves (PQ, HLG) would need tone
mapping, which this does not attempt: such pixels are left as they are.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np

_SRGB_XY = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
_D65_XY = (0.3127, 0.3290)
_UNSPECIFIED, _BT709 = 2, 1  # primaries that need no conversion
_SDR_TRANSFERS = frozenset({1, 2, 6, 13, 14, 15})
_BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)


def needs_conversion(nclx: Mapping[str, Any]) -> bool:
    """Whether pixels described by `nclx` differ from sRGB in a way this module converts."""
    primaries = nclx.get("color_primaries", _UNSPECIFIED)
    transfer = nclx.get("transfer_characteristics", _UNSPECIFIED)
    return primaries not in (_UNSPECIFIED, _BT709) and transfer in _SDR_TRANSFERS


def to_srgb(pixels: np.ndarray, nclx: Mapping[str, Any]) -> np.ndarray:
    """H x W x 3 floats in 0..255 with `nclx`'s primaries, to sRGB in 0..255."""
    source = (
        (nclx["color_primary_red_x"], nclx["color_primary_red_y"]),
        (nclx["color_primary_green_x"], nclx["color_primary_green_y"]),
        (nclx["color_primary_blue_x"], nclx["color_primary_blue_y"]),
    )
    white = (nclx["color_primary_white_x"], nclx["color_primary_white_y"])
    to_xyz = _rgb_to_xyz(source, white)
    if not np.allclose(white, _D65_XY, atol=1e-3):
        to_xyz = _adaptation(white, _D65_XY) @ to_xyz
    matrix = np.linalg.inv(_rgb_to_xyz(_SRGB_XY, _D65_XY)) @ to_xyz
    linear = _decoded(pixels / 255) @ matrix.T.astype(np.float32)
    return (_encoded(np.clip(linear, 0, 1)) * 255).astype(np.float32)


def _xyz(xy: tuple[float, float]) -> np.ndarray:
    x, y = xy
    return np.array([x / y, 1.0, (1 - x - y) / y])


def _rgb_to_xyz(primaries: tuple, white: tuple[float, float]) -> np.ndarray:
    """The matrix from linear RGB with these primaries to XYZ, white mapping to Y = 1."""
    columns = np.stack([_xyz(xy) for xy in primaries], axis=1)
    scale = np.linalg.solve(columns, _xyz(white))
    return columns * scale


def _adaptation(source: tuple[float, float], target: tuple[float, float]) -> np.ndarray:
    """Bradford's chromatic adaptation from one white point to another, in XYZ."""
    gains = (_BRADFORD @ _xyz(target)) / (_BRADFORD @ _xyz(source))
    return np.linalg.inv(_BRADFORD) @ np.diag(gains) @ _BRADFORD


def _decoded(values: np.ndarray) -> np.ndarray:
    """sRGB-encoded 0..1 to linear light."""
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def _encoded(values: np.ndarray) -> np.ndarray:
    """Linear light 0..1 to sRGB-encoded."""
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * values ** (1 / 2.4) - 0.055)
