"""The objective of Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural
Networks" (CVPR 2016): its terms, and the whole of it for a batch of photos.

Symbols as in the paper, for one layer l: F (the output image's features) and P (the photo's),
each N_l channels by M_l positions; G = F F^T and A (the style image's Gram), each divided by its
own number of positions so that a preset looks the same at any output size:

    L_content = 1/2 * (4096 / M) * sum (F - P)^2        (4096 = relu4_2 positions at 512 px)
    E_l       = 1 / (4 N_l^2) * sum (G_l / M_l - A_l / M_l^s)^2
    L_style   = sum_l w_l E_l
    L_total   = alpha L_content + beta L_style + tv_weight L_tv
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from daemon.engine.settings import StyleSettings
from daemon.engine.vgg import VGGFeatures

CONTENT_REFERENCE_POSITIONS = 4096  # relu4_2 positions of a 512 x 512 image: the paper's scale


@dataclass(frozen=True)
class Losses:
    """The objective's terms, already weighted, as plain floats."""

    total: float
    content: float
    style: float
    tv: float


def gram(features: Tensor) -> Tensor:
    """(B, N, H, W) -> (B, N, N) Gram matrix divided by its M = H * W positions, in fp32."""
    b, n, h, w = features.shape
    return _normalised_gram(features.reshape(b, n, h * w).float())


def _normalised_gram(flat: Tensor) -> Tensor:
    """(B, N, M) -> F F^T / M, made exactly symmetric: some CPUs' blocked products round the two
    triangles differently, and the style loss's written-out gradient holds only for symmetric
    G and A. On a CPU whose product is symmetric already, (G + G^T) / 2 is G bit for bit."""
    g = flat @ flat.transpose(1, 2) / flat.shape[2]
    return (g + g.transpose(1, 2)) / 2


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """1/2 (4096 / M) sum (F - P)^2, per batch item."""
    positions = features.shape[2] * features.shape[3]
    squared = (features.float() - target.float()).pow(2).flatten(1).sum(1)
    return 0.5 * (CONTENT_REFERENCE_POSITIONS / positions) * squared


def style_layer_loss(features: Tensor, target_gram: Tensor) -> Tensor:
    """E_l = 1/(4 N^2) sum (G/M - A/M_s)^2, per batch item; `target_gram` is already A/M_s."""
    return _StyleLayerLoss.apply(features, target_gram)


class _StyleLayerLoss(torch.autograd.Function):
    """E_l with its gradient written out: dE/dF = (G/M - A) F / (N^2 M), one product, which
    holds because A, a Gram, is symmetric like G.

    Left to autograd, the Gram's backward is two products plus the add of a transposed copy
    (G is symmetric, autograd does not know it) and the loss's a few elementwise passes over
    N x N; at relu1_1 of a 512 px photo F alone is 64 x 262144.
    """

    @staticmethod
    def forward(ctx, features: Tensor, target_gram: Tensor) -> Tensor:  # type: ignore[override]
        b, n, h, w = features.shape
        dtype = torch.promote_types(features.dtype, torch.float32)  # bf16 features: fp32 Grams
        flat = features.reshape(b, n, h * w).to(dtype)
        # G/M as the targets were made (not one baddbmm): a photo that is its own painting
        # then has a difference of exactly 0, and its run ends at once
        diff = _normalised_gram(flat) - target_gram.to(dtype)
        ctx.save_for_backward(flat, diff)
        ctx.features_shape, ctx.features_dtype = features.shape, features.dtype
        return diff.pow(2).sum((1, 2)) / (4 * n**2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        flat, diff = ctx.saved_tensors
        _, n, m = flat.shape
        # the scale goes on the N x N factor, not on the N x M product
        scaled = diff * (grad / (n**2 * m)).to(diff.dtype)[:, None, None]
        grad_features = torch.bmm(scaled, flat).reshape(ctx.features_shape)
        return grad_features.to(ctx.features_dtype), None


def tv_loss(image: Tensor) -> Tensor:
    """Mean squared difference between neighbouring pixels, per batch item (size-independent)."""
    dx = (image[..., :, 1:] - image[..., :, :-1]).pow(2).flatten(1).mean(1)
    dy = (image[..., 1:, :] - image[..., :-1, :]).pow(2).flatten(1).mean(1)
    return dx + dy


class Objective:
    """The paper's objective for a batch of photos of one size, with their targets precomputed.

    Photos in a batch share nothing but the network: each item's terms depend only on its own
    image and targets, so the gradient of the summed objective is each photo's own gradient.
    """

    def __init__(
        self,
        model: VGGFeatures,
        settings: StyleSettings,
        content: Tensor,
        style_grams: dict[str, Tensor],
        *,
        bf16: bool = False,
    ) -> None:
        """`content`: (3, H, W) or (B, 3, H, W); `style_grams`: (1 or B, N, N) per layer;
        `bf16`: the network's passes in bf16 (the losses stay fp32), the content targets too,
        so that the content term compares like with like."""
        self.model = model
        self.settings = settings
        self.bf16 = bf16
        with torch.no_grad():
            feats = self._features(content if content.dim() == 4 else content[None])
        self.content_targets = {name: feats[name] for name in settings.content_layers}
        self.style_grams = style_grams

    def __call__(self, image: Tensor) -> tuple[Tensor, Losses]:
        """Objective of a (B, 3, H, W) batch, all items: the scalar to minimise and its terms."""
        loss, terms = self.per_item(image)
        return loss, Losses(*terms.sum(1).tolist())

    def value_and_backward(self, image: Tensor, items: Tensor | None = None) -> Tensor:
        """`per_item`'s terms, with the summed objective backpropagated into `image`'s graph:
        what an optimiser step needs, as `blocks.BlockObjective` gives it too."""
        loss, columns = self.per_item(image, items)
        loss.backward()
        return columns

    def per_item(self, image: Tensor, items: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The summed objective of a batch of the photos at `items` (all when None), and each
        item's terms as a detached (4, B) tensor of Losses' fields, left on the device: the
        caller copies them back once, with whatever else it needs."""
        s = self.settings

        def target(t: Tensor) -> Tensor:
            return t if items is None or t.shape[0] == 1 else t[items.to(t.device)]

        feats = self._features(image)
        content = sum(content_loss(feats[n], target(t)) for n, t in self.content_targets.items())
        style = sum(
            w * style_layer_loss(feats[n], target(self.style_grams[n])) for n, w in s.style_layers
        )
        tv = tv_loss(image) if s.tv_weight else torch.zeros(image.shape[0], device=image.device)
        weighted = (s.alpha * content, s.beta * style, s.tv_weight * tv)
        total = sum(weighted)
        columns = torch.stack([t.detach().expand(image.shape[0]) for t in (total, *weighted)])
        return total.sum(), columns

    def _features(self, image: Tensor) -> dict[str, Tensor]:
        return self.model(image, bf16=self.bf16)
