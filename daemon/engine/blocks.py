"""The paper's objective and its gradient evaluated in blocks, exactly: for sizes whose whole
activations do not fit, never a different objective.

As in Galerne et al., "Scaling Painting Style Transfer" (EGSR 2024): a first pass, without
gradients, runs VGG over overlapping crops and adds up each layer's Gram over the positions each
crop owns (its tile), and the content term likewise; the Grams are then the whole image's, G/M
over all positions, and so are the losses. A second pass runs each crop again with gradients and
backpropagates, from the positions its tile owns only, the whole objective's gradient at those
features: dE_l/dF = (G_l/M_l - A_l) F / (N_l^2 M_l) with the global G, and (4096/M)(F - P) for
the content. Summed over the crops, that is the whole image's gradient.

Exact because a crop reaches `MARGIN` px beyond its tile on every side that is not the image's
edge: every feature a tile owns sees only real pixels (relu5_1's receptive field is 156 px, 78
each way), padded as in the whole image where the crop meets the image's edge; and tiles and crops
start on multiples of 16 px, so each average pooling's 2 x 2 cells are the whole image's.
Differences are floating-point rounding only (tests/test_blocks.py: objective and gradient
against the whole image's).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from daemon.engine.objective import CONTENT_REFERENCE_POSITIONS, tv_loss
from daemon.engine.settings import StyleSettings
from daemon.engine.vgg import VGGFeatures

ALIGN = 16  # px: four 2x2 poolings deep (relu5_1)
MARGIN = 96  # px beyond a tile on each side: relu5_1 sees 78, rounded up to a multiple of ALIGN
# The stride of each layer the objective may read, relative to the image.
STRIDES = {"relu1": 1, "relu2": 2, "relu3": 4, "relu4": 8, "relu5": 16}


def stride_of(layer: str) -> int:
    """How many pixels one position of `layer` (e.g. relu4_2) steps over."""
    return STRIDES[layer.split("_")[0]]


def tile_for(block: int) -> int:
    """A requested block size as a tile side: a multiple of ALIGN, at least ALIGN."""
    return max(ALIGN, block // ALIGN * ALIGN)


@dataclass(frozen=True)
class _Crop:
    """A tile (the positions it owns) and the crop around it that is run through VGG, in px."""

    tile: tuple[int, int, int, int]  # y0, y1, x0, x1
    crop: tuple[int, int, int, int]

    def rows_and_columns(self, stride: int, size: tuple[int, ...]) -> tuple[slice, slice]:
        """The whole image's positions at `stride` that the tile owns (the last tile to the
        end: pooling floors an odd side)."""
        y0, y1, x0, x1 = self.tile
        height, width = size
        bottom = y1 // stride if y1 < height else height // stride
        right = x1 // stride if x1 < width else width // stride
        return slice(y0 // stride, bottom), slice(x0 // stride, right)

    def owned(self, features: Tensor, stride: int, size: tuple[int, ...]) -> Tensor:
        """The positions of the crop's `features` (at `stride`) that the tile owns."""
        rows, columns = self.rows_and_columns(stride, size)
        top, left = self.crop[0] // stride, self.crop[2] // stride
        return features[
            ..., rows.start - top : rows.stop - top, columns.start - left : columns.stop - left
        ]


def crops(size: tuple[int, int], block: int) -> list[_Crop]:
    """Tiles of `block` px (ALIGN-aligned) covering an image of `size` (H, W), with their crops."""
    height, width = size
    tile = tile_for(block)
    found = []
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(height, y0 + tile), min(width, x0 + tile)
            crop = (max(0, y0 - MARGIN), min(height, y1 + MARGIN))
            crop += (max(0, x0 - MARGIN), min(width, x1 + MARGIN))
            found.append(_Crop((y0, y1, x0, x1), crop))
    return found


def _positions(layer: str, size: tuple[int, ...]) -> int:
    """M_l: how many positions `layer` has for an image of `size` (each pooling floors)."""
    stride = stride_of(layer)
    return (size[0] // stride) * (size[1] // stride)


def _cut(image: Tensor, crop: _Crop) -> Tensor:
    cy0, cy1, cx0, cx1 = crop.crop
    return image[..., cy0:cy1, cx0:cx1]


def owned_features(
    model: VGGFeatures, image: Tensor, layers: tuple[str, ...], block: int, *, bf16: bool = False
) -> Iterator[tuple[_Crop, dict[str, Tensor]]]:
    """For each crop of a (B, 3, H, W) image, without gradients: its tile's features at `layers`."""
    size = tuple(image.shape[-2:])
    with torch.no_grad():
        for crop in crops(size, block):
            features = model(_cut(image, crop), bf16=bf16)
            yield crop, {name: crop.owned(features[name], stride_of(name), size) for name in layers}


def block_grams(
    model: VGGFeatures, image: Tensor, layers: tuple[str, ...], block: int, *, bf16: bool = False
) -> dict[str, Tensor]:
    """Each layer's Gram of the whole (B, 3, H, W) image, G/M over all its positions, made in
    blocks; fp32, exactly symmetric, as `objective.gram` makes it from the whole image."""
    sums: dict[str, Tensor] = {}
    for _, owned in owned_features(model, image, layers, block, bf16=bf16):
        for name, features in owned.items():
            _add_gram(sums, name, features)
    size = tuple(image.shape[-2:])
    return {name: _whole_gram(total, _positions(name, size)) for name, total in sums.items()}


def _add_gram(sums: dict[str, Tensor], name: str, features: Tensor) -> None:
    """Add one tile's F F^T (fp32, unnormalised) to `sums[name]`."""
    flat = features.flatten(2).float()
    product = flat @ flat.transpose(1, 2)
    sums[name] = sums[name] + product if name in sums else product


def _whole_gram(total: Tensor, positions: int) -> Tensor:
    """The tiles' summed F F^T as the whole image's G/M, made exactly symmetric as
    `objective.gram` makes it."""
    g = total / positions
    return (g + g.transpose(1, 2)) / 2


class BlockObjective:
    """`objective.Objective` for a batch of photos of one size, evaluated in blocks of `block`
    px: the same values and gradient, with the activations of one crop at a time."""

    def __init__(
        self,
        model: VGGFeatures,
        settings: StyleSettings,
        content: Tensor,
        style_grams: dict[str, Tensor],
        *,
        block: int,
        bf16: bool = False,
    ) -> None:
        self.model, self.settings, self.block, self.bf16 = model, settings, block, bf16
        content = content if content.dim() == 4 else content[None]
        self.size = tuple(content.shape[-2:])
        layers = tuple(settings.content_layers)
        # The photo's content features, whole (relu4_2: 512 channels at 1/8 the side, 32 bytes
        # a pixel in fp32), assembled from the tiles' owned positions.
        self.content_targets = {
            name: _assembled(model, content, name, block, bf16, self.size) for name in layers
        }
        self.style_grams = style_grams
        self.blocks = len(crops(self.size, block))

    def value_and_backward(self, image: Tensor, items: Tensor | None = None) -> Tensor:
        """The terms of a (B, 3, H, W) batch, as a detached (4, B) tensor of Losses' fields,
        with the objective's gradient backpropagated into `image`'s graph (as `loss.backward()`
        would from the whole-image objective)."""
        s = self.settings
        layers = (*s.content_layers, *(name for name, _ in s.style_layers))
        pixels = image.detach()
        batch = pixels.shape[0]

        def target(t: Tensor) -> Tensor:
            return t if items is None or t.shape[0] == 1 else t[items.to(t.device)]

        # Pass 1: the whole image's Grams and content term, block by block.
        sums: dict[str, Tensor] = {}
        positions = {name: _positions(name, self.size) for name in layers}
        squared = {name: torch.zeros(batch, device=pixels.device) for name in s.content_layers}
        for crop, owned in owned_features(self.model, pixels, layers, self.block, bf16=self.bf16):
            for name in s.content_layers:
                rows, columns = crop.rows_and_columns(stride_of(name), self.size)
                reference = target(self.content_targets[name])[..., rows, columns]
                difference = owned[name].float() - reference.float()
                squared[name] += difference.pow(2).flatten(1).sum(1)
            for name, _ in s.style_layers:
                _add_gram(sums, name, owned[name])
        content = sum(
            0.5 * (CONTENT_REFERENCE_POSITIONS / positions[name]) * total
            for name, total in squared.items()
        )
        style = torch.zeros(batch, device=pixels.device)
        coefficients = {}
        for name, weight in s.style_layers:
            g = _whole_gram(sums[name], positions[name])
            difference = g - target(self.style_grams[name]).float()
            n = difference.shape[1]
            style += weight * difference.pow(2).sum((1, 2)) / (4 * n**2)
            coefficients[name] = difference * (s.beta * weight / (n**2 * positions[name]))

        # Pass 2: each crop's share of the gradient, from the positions its tile owns.
        gradient = torch.zeros_like(pixels)
        for crop in crops(self.size, self.block):
            piece = _cut(pixels, crop).clone().requires_grad_(True)
            features = self.model(piece, bf16=self.bf16)
            surrogate = piece.new_zeros(())
            for name in s.content_layers:
                owned = crop.owned(features[name], stride_of(name), self.size).float()
                rows, columns = crop.rows_and_columns(stride_of(name), self.size)
                reference = target(self.content_targets[name])[..., rows, columns].float()
                scale = s.alpha * CONTENT_REFERENCE_POSITIONS / positions[name]
                surrogate = surrogate + (owned * (scale * (owned - reference)).detach()).sum()
            for name, _ in s.style_layers:
                owned = crop.owned(features[name], stride_of(name), self.size)
                flat = owned.flatten(2).float()
                pull = torch.bmm(coefficients[name], flat.detach())
                surrogate = surrogate + (flat * pull).sum()
            surrogate.backward()
            cy0, cy1, cx0, cx1 = crop.crop
            gradient[..., cy0:cy1, cx0:cx1] += piece.grad
        tv = torch.zeros(batch, device=pixels.device)
        if s.tv_weight:
            with torch.enable_grad():
                whole = pixels.clone().requires_grad_(True)
                tv = tv_loss(whole)
                (s.tv_weight * tv.sum()).backward()
                gradient += whole.grad
            tv = tv.detach()
        image.backward(gradient)
        weighted = (s.alpha * content, s.beta * style, s.tv_weight * tv)
        total = sum(weighted)
        return torch.stack([total, *weighted]).detach()


def _assembled(
    model: VGGFeatures,
    image: Tensor,
    layer: str,
    block: int,
    bf16: bool,
    size: tuple[int, ...],
) -> Tensor:
    """The whole image's features at `layer`, put together from each tile's owned positions."""
    stride = stride_of(layer)
    whole = None
    for crop, owned in owned_features(model, image, (layer,), block, bf16=bf16):
        features = owned[layer]
        if whole is None:
            shape = (*features.shape[:2], size[0] // stride, size[1] // stride)
            whole = features.new_zeros(shape)
        rows, columns = crop.rows_and_columns(stride, size)
        whole[..., rows, columns] = features
    assert whole is not None
    return whole
