"""stylebox: drop-folder neural style transfer (Gatys, Ecker & Bethge, CVPR 2016)."""

__version__ = "0.1.0"
