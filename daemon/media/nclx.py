"""Colour given as numbers (a HEIF's nclx box) rather than an ICC profile, converted to sRGB.

A phone's HEIC may say "Display P3" with nclx alone: its primaries' chromaticities, a transfer
curve and a matrix. pillow-heif undoes the matrix (YCbCr to RGB) and hands the rest over in
`info["nclx_profile"]`; read as if it were sRGB, a P3 photo looks washed out (PhotoPrism #1522).
Here the pixels go to linear light, through XYZ (white points adapted by Bradford when they
differ) to linear sRGB, and back through the sRGB curve; colours outside sRGB are clipped.

Standard-range curves (sRGB's 13, the BT.709 family's 1, 6, 14, 15) are decoded with the sRGB
curve, as browsers and viewers do for still photos. HDR stills (a camera's HEIF in HLG or in
PQ: Sony's HLG, Canon's "HDR PQ") are tone-mapped, not read as sRGB, which leaves a PQ photo
dim and flat (its reference white sits at 58 % of the code values) and either one's BT.2020
colours dull. Each curve gives light relative to HDR's reference white, 203 cd/m2 (ITU-R
BT.2408), which becomes sRGB's white: PQ's absolute light divided by it, HLG's scene light
through the BT.2100 display transform for a 1000 cd/m2 display (its 75 % signal lands on the
reference white). Light up to KNEE stays as it is; above, the largest channel is compressed
smoothly (slope 1 at the knee) towards white, hue kept, so highlights roll off instead of
clipping. What pillow-heif hands over is 8 bits a channel (it reduces 10-bit HEIFs), enough
for a painting's input.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np

_SRGB_XY = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
_D65_XY = (0.3127, 0.3290)
_UNSPECIFIED, _BT709 = 2, 1  # primaries that need no conversion
_SDR_TRANSFERS = frozenset({1, 2, 6, 13, 14, 15})
_PQ, _HLG = 16, 18  # SMPTE ST 2084 and ARIB STD-B67 (BT.2100)
REFERENCE_WHITE_NITS = 203.0  # BT.2408's HDR reference white: sRGB's white here
HLG_DISPLAY_NITS = 1000.0  # the nominal peak the HLG display transform is taken for
HLG_GAMMA = 1.2  # BT.2100's system gamma at that peak
KNEE = 0.75  # linear light relative to the reference white: kept below, rolled off above
_ROWS = 256  # converted a band at a time: a 45 MP photo's float temporaries stay small
_BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)


def needs_conversion(nclx: Mapping[str, Any]) -> bool:
    """Whether pixels described by `nclx` differ from sRGB in a way this module converts."""
    primaries = nclx.get("color_primaries", _UNSPECIFIED)
    transfer = nclx.get("transfer_characteristics", _UNSPECIFIED)
    if transfer in (_PQ, _HLG):
        return True
    return primaries not in (_UNSPECIFIED, _BT709) and transfer in _SDR_TRANSFERS


def to_srgb(pixels: np.ndarray, nclx: Mapping[str, Any]) -> np.ndarray:
    """H x W x 3 floats in 0..255 described by `nclx`, to sRGB in 0..255."""
    to_xyz = _to_xyz(nclx)
    matrix = (np.linalg.inv(_rgb_to_xyz(_SRGB_XY, _D65_XY)) @ to_xyz).T.astype(np.float32)
    transfer = nclx.get("transfer_characteristics", _UNSPECIFIED)
    out = np.empty(pixels.shape, np.float32)
    for top in range(0, pixels.shape[0], _ROWS):
        signal = pixels[top : top + _ROWS] / np.float32(255)
        if transfer == _PQ:
            linear = _pq_nits(signal) / np.float32(REFERENCE_WHITE_NITS)
        elif transfer == _HLG:
            linear = _hlg_display(signal, to_xyz[1].astype(np.float32))
        else:
            linear = _decoded(signal)
        linear = np.clip(linear @ matrix, 0, None)
        if transfer in (_PQ, _HLG):
            linear = _rolled_off(linear)
        out[top : top + _ROWS] = _encoded(np.clip(linear, 0, 1)) * 255
    return out


def _to_xyz(nclx: Mapping[str, Any]) -> np.ndarray:
    """The matrix from `nclx`'s linear RGB to XYZ with a D65 white."""
    if nclx.get("color_primaries", _UNSPECIFIED) in (_UNSPECIFIED, _BT709):
        return _rgb_to_xyz(_SRGB_XY, _D65_XY)
    source = (
        (nclx["color_primary_red_x"], nclx["color_primary_red_y"]),
        (nclx["color_primary_green_x"], nclx["color_primary_green_y"]),
        (nclx["color_primary_blue_x"], nclx["color_primary_blue_y"]),
    )
    white = (nclx["color_primary_white_x"], nclx["color_primary_white_y"])
    to_xyz = _rgb_to_xyz(source, white)
    if not np.allclose(white, _D65_XY, atol=1e-3):
        to_xyz = _adaptation(white, _D65_XY) @ to_xyz
    return to_xyz


def _pq_nits(signal: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084's EOTF: a PQ signal 0..1 to absolute light in cd/m2."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    power = signal ** np.float32(1 / m2)
    ratio = np.maximum(power - c1, 0) / (c2 - c3 * power)
    return np.float32(10000) * ratio ** np.float32(1 / m1)


def _hlg_display(signal: np.ndarray, luminance: np.ndarray) -> np.ndarray:
    """HLG's inverse OETF to scene light, then BT.2100's display transform (system gamma 1.2
    at HLG_DISPLAY_NITS), relative to the reference white; `luminance`: the Y row of the
    primaries' matrix, for the scene light's luminance."""
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    high = (np.exp((np.maximum(signal, 0.5) - c) / a) + b) / 12
    scene = np.where(signal <= 0.5, signal * signal / 3, high).astype(np.float32)
    y = np.maximum(scene @ luminance, 1e-6)[..., np.newaxis]
    gain = np.float32(HLG_DISPLAY_NITS / REFERENCE_WHITE_NITS)
    return gain * y ** np.float32(HLG_GAMMA - 1) * scene


def _rolled_off(linear: np.ndarray) -> np.ndarray:
    """Light above KNEE compressed towards 1 by its largest channel (hue kept), with slope 1
    at the knee: highlights roll off rather than clip; below the knee nothing changes."""
    peak = linear.max(axis=-1, keepdims=True)
    over = np.maximum(peak - KNEE, 0) / (1 - KNEE)
    mapped = np.where(peak > KNEE, KNEE + (1 - KNEE) * (1 - np.exp(-over)), peak)
    return linear * (mapped / np.maximum(peak, 1e-6))


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
