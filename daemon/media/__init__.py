"""Photo files to pixels and back: decoding (EXIF, ICC -> sRGB, pixel limit) and encoding
(format, EXIF, profile). Knows Pillow and numpy, not torch, jobs or folders."""
