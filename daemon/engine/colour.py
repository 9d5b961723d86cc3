"""Colour handling around the transfer: Gatys, Bethge, Hertzmann & Shechtman (2016),
"Preserving Color in Neural Artistic Style Transfer" (arXiv:1606.05897).

- luminance: transfer on the luminance channel only, then recombine with the photo's chroma (YIQ);
- histogram: first give the style image the photo's colour statistics (mean and covariance).

All images are RGB 0-255 tensors of shape (3, H, W).
"""

import torch
from torch import Tensor

# NTSC YIQ, as in the paper.
_RGB_TO_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.596, -0.274, -0.322],
        [0.211, -0.523, 0.312],
    ]
)


def rgb_to_yiq(rgb: Tensor) -> Tensor:
    """(3, H, W) RGB -> (3, H, W) YIQ, same scale (Y in 0-255)."""
    return torch.einsum("ij,jhw->ihw", _RGB_TO_YIQ.to(rgb), rgb)


def yiq_to_rgb(yiq: Tensor) -> Tensor:
    """Inverse of `rgb_to_yiq`."""
    return torch.einsum("ij,jhw->ihw", torch.linalg.inv(_RGB_TO_YIQ).to(yiq), yiq)


def luminance(rgb: Tensor) -> Tensor:
    """(3, H, W) RGB -> (1, H, W) Y."""
    return rgb_to_yiq(rgb)[:1]


def match_luminance(style_y: Tensor, content_y: Tensor) -> Tensor:
    """Shift and scale the style's luminance to the photo's mean and spread (paper, eq. 1)."""
    scale = content_y.std() / style_y.std().clamp_min(1e-6)
    return (style_y - style_y.mean()) * scale + content_y.mean()


def with_chroma_of(y: Tensor, photo_rgb: Tensor) -> Tensor:
    """Combine a (1, H, W) luminance with the photo's I and Q channels; returns RGB."""
    iq = rgb_to_yiq(photo_rgb)[1:]
    return yiq_to_rgb(torch.cat([y, iq], dim=0))


def match_histogram(style_rgb: Tensor, photo_rgb: Tensor) -> Tensor:
    """Linear colour transfer: style pixels get the photo's mean and covariance.

    x' = A (x - mu_s) + mu_c with A = Sigma_c^(1/2) Sigma_s^(-1/2) (the paper's "image analogies"
    variant with symmetric square roots), clamped back into range.
    """
    style = style_rgb.reshape(3, -1).double()
    photo = photo_rgb.reshape(3, -1).double()
    mu_s, mu_c = style.mean(1, keepdim=True), photo.mean(1, keepdim=True)
    eye = 1e-5 * torch.eye(3, dtype=torch.float64)
    transform = _sqrtm(torch.cov(photo) + eye) @ torch.linalg.inv(_sqrtm(torch.cov(style) + eye))
    out = transform @ (style - mu_s) + mu_c
    return out.reshape(style_rgb.shape).to(style_rgb.dtype).clamp(0, 255)


def _sqrtm(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix."""
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
