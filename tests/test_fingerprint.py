"""Golden preset fingerprints: a fingerprint that changes makes every finished photo run again.

The digests were computed with the hand-written config parser (before pydantic) and are kept as
literals: a rewrite of the config must give the same digest for the same preset, bit for bit.
"""

from pathlib import Path
from typing import Any

import pytest

from daemon.config import load_config, parse_preset

REPO = Path(__file__).resolve().parents[1]

SHIPPED = {
    "starry_night": "88a0773f143cb9d939ce4697b7b88a47b6d235431641e57983674fd63f0fb3b9",
    "great_wave": "999b31ced8b23299d886c3a61372340b18d4c4a49e517a77077b0d82cb3dbe25",
    "the_scream": "ae81f5d7beba2633ef9ef4b80217f2d81ea79554a4d0a0b1295343872834f99a",
    "shipwreck": "60e0ac69b43cbbe21a3fc26f11e7ca6e7f1441ddf4fe305db015c9274bf53987",
}

# Presets built by the config file's rules, with style images from the repository (fixed bytes).
OTHERS: dict[str, tuple[dict[str, Any], str]] = {
    "blend": (
        {
            "style": [
                {"image": "styles/swirl.png", "weight": 3},
                {"image": "styles/stained_glass.png"},
            ]
        },
        "f59ac1942e9956cf2525a4f361d1b111a10c3294977df1b22eaa6b4d58fa4d70",
    ),
    "every_field": (
        {
            "style": "styles/great_wave.png",
            "alpha": 2,
            "beta": 1e4,
            "content_layers": ["relu3_2", "relu4_2"],
            "style_layers": ["relu1_1", "relu2_1", "relu3_1"],
            "size": 256,
            "style_scale": 0.5,
            "colour": "luminance",
            "tv_weight": 0.01,
            "optimizer": "adam",
            "steps": 120,
            "seed": 7,
            "init": "noise",
            "pooling": "max",
            "weights": "torchvision",
        },
        "ee16296484382100041b2706b52f9519ed394a20a64e320be7c76915723f22b1",
    ),
    "local_weights": (
        {"style": "styles/the_scream.jpg", "weights": "{weights}"},
        "c37dcff5087c9bba7862a8d0cafe5e1507050dcc2ce604cbe9a36cc018737bb5",
    ),
    "layer_map": (
        {"style": "styles/swirl.png", "style_layers": {"relu1_1": 0.5, "conv2_1": 2}},
        "e2d03f9831e5a7c5e75e3cedf7adb99f44ce4c6c57646210e3b06663e61b83dd",
    ),
}


def test_shipped_presets_keep_their_fingerprints() -> None:
    presets = load_config(REPO / "config.yaml").presets
    assert {name: preset.fingerprint for name, preset in presets.items()} == SHIPPED


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_other_presets_keep_their_fingerprints(tmp_path: Path, name: str) -> None:
    weights = tmp_path / "vgg19.pth"
    weights.write_bytes(b"stylebox golden weights\x00\x01\x02")
    raw, digest = OTHERS[name]
    raw = {k: v.format(weights=weights) if k == "weights" else v for k, v in raw.items()}
    assert parse_preset(name, raw, REPO).fingerprint == digest


def test_a_setting_added_later_counts_only_away_from_its_default() -> None:
    """`finish` came after the first fingerprints: spelled out at its default, a preset keeps its
    digest (an upgrade redoes nothing); set otherwise, the photos are made again."""
    plain = {"style": "styles/starry_night.jpg", "size": 256}
    spelled = parse_preset("starry_night", plain | {"finish": "standard"}, REPO)
    assert spelled.fingerprint == SHIPPED["starry_night"]
    finer = parse_preset("starry_night", plain | {"finish": "fine"}, REPO)
    assert finer.fingerprint != SHIPPED["starry_night"]
