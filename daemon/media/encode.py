"""Results out: pixels to JPEG, PNG, TIFF, WebP, AVIF or HEIC, always tagged sRGB, carrying the
photo's EXIF and saying what made them (EXIF Software, an XMP packet naming the preset).

PNG and TIFF are lossless; the others are lossy at one `quality`, with full-resolution chroma
where the codec has it: a painting's detail is in its brush strokes' colours, which 4:2:0 halves.
Outputs are byte-for-byte reproducible (a fixed profile date, no encoder timestamps), so the same
photo and preset give the same file; DECISIONS.md ("Result formats") has what each encoder did.
"""

import struct
import zlib
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from xml.sax.saxutils import quoteattr

import numpy as np
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

from daemon.errors import InputError
from daemon.media.decode import SRGB_PROFILE, portable_exif
from daemon.media.formats import WRITE_FORMATS

# LittleCMS stamps the profile with the time it was built; a fixed date (the header's bytes 24-35,
# not covered by a profile ID, which is unset) makes every output byte-for-byte reproducible.
_BUILT_ICC = ImageCms.ImageCmsProfile(SRGB_PROFILE).tobytes()
_SRGB_ICC: bytes = _BUILT_ICC[:24] + struct.pack(">6H", 2000, 1, 1, 0, 0, 0) + _BUILT_ICC[36:]

# Our XMP properties (`stylebox:preset`) live here; .invalid is reserved (RFC 2606), so the name
# is ours and never resolves to anyone else's schema.
XMP_NAMESPACE = "https://stylebox.invalid/ns/1.0/"

_SUFFIX_FORMATS: dict[str, str] = {
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".webp": "webp",
    ".avif": "avif",
    ".heic": "heic",
    ".heif": "heic",
}
# libaom writes other bytes with one thread than with several (seen: 1 against 2..16, alike among
# those), and Pillow asks for as many as the host has CPUs: a fixed count keeps hosts alike.
_AVIF_THREADS = 8
_PILLOW_NAMES = {"heic": "HEIF"}  # pillow-heif's plugin; the others are their own name in capitals

# TIFF tag values written by `_write_tiff`.
_TIFF_ADOBE_DEFLATE = 8
_TIFF_PHOTOMETRIC_RGB = 2
_TIFF_PLANAR_CONTIGUOUS = 1
_TIFF_PREDICTOR_HORIZONTAL = 2
_TIFF_XMP = 700  # XMLPacket, where XMP's spec puts the packet in a TIFF


@dataclass(frozen=True)
class Provenance:
    """What made a result, written into it: EXIF Software and an XMP packet naming the preset."""

    software: str  # "stylebox 0.1.0"
    preset: str

    def xmp(self) -> bytes:
        """An XMP packet with xmp:CreatorTool and stylebox:preset; no date, so bytes repeat."""
        return (
            '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about=""'
            ' xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
            f" xmlns:stylebox={quoteattr(XMP_NAMESPACE)}"
            f" xmp:CreatorTool={quoteattr(self.software)}"
            f" stylebox:preset={quoteattr(self.preset)}/>"
            "</rdf:RDF></x:xmpmeta>"
            '<?xpacket end="w"?>'
        ).encode()


def save_image(
    pixels: np.ndarray,
    destination: Path | BinaryIO,
    *,
    format: str,
    quality: int = 92,
    exif: bytes | None = None,
    bit_depth: int = 8,
    provenance: Provenance | None = None,
    strip_location: bool = False,
) -> None:
    """Write pixels tagged as sRGB with the photo's EXIF (Orientation 1; no GPS directory if
    `strip_location`) and, given a provenance, EXIF Software and an XMP packet."""
    if format not in WRITE_FORMATS:
        raise ValueError(
            f"cannot save format {format!r}; expected one of {', '.join(WRITE_FORMATS)}"
        )
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, not {bit_depth}")
    if bit_depth == 16 and format != "tiff":
        raise ValueError(f"16-bit output needs format 'tiff'; {format} holds 8 bits per channel")
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected H x W x 3 pixels, got shape {pixels.shape}")
    result_exif = _result_exif(exif, provenance, strip_location)
    xmp = provenance.xmp() if provenance else None
    if format == "tiff":
        _write_tiff(_quantised(pixels, bit_depth), destination, result_exif, xmp)
        return
    options = _codec_options(format, quality, xmp)
    if result_exif:  # pillow-heif refuses an empty one ("Could not find location of TIFF header")
        options["exif"] = result_exif
    Image.fromarray(_quantised(pixels, 8)).save(
        destination,
        format=_PILLOW_NAMES.get(format, format.upper()),
        icc_profile=_SRGB_ICC,
        **options,
    )


def format_for_suffix(suffix: str) -> str:
    """Map an output file suffix to the `save_image` format, so a typo in config fails early."""
    try:
        return _SUFFIX_FORMATS[suffix.lower()]
    except KeyError:
        known = ", ".join(_SUFFIX_FORMATS)
        raise InputError(f"unsupported output suffix {suffix!r}; expected one of {known}") from None


def _result_exif(
    exif: bytes | None, provenance: Provenance | None, strip_location: bool
) -> bytes | None:
    """The photo's portable EXIF, less its GPS directory if asked, with Software when given."""
    carried = portable_exif(exif) if exif else None
    if provenance is None and not strip_location:
        return carried
    tags = Image.Exif()
    if carried:
        tags.load(carried)
    if strip_location:
        # The whole directory: latitude, longitude, altitude, heading, the satellites' time.
        tags.pop(ExifTags.IFD.GPSInfo, None)
    if provenance is not None:
        tags[ExifTags.Base.Software] = provenance.software
    return tags.tobytes() if len(tags) else None


def _codec_options(format: str, quality: int, xmp: bytes | None) -> dict[str, Any]:
    """Each encoder's options besides profile and EXIF: lossy at `quality`, full chroma where the
    codec has it, and the XMP packet where its own option is."""
    if format == "png":
        # Pillow 13 has no `xmp` option for PNG; the packet goes in the iTXt chunk XMP names.
        text = PngImagePlugin.PngInfo()
        if xmp:
            text.add_itxt("XML:com.adobe.xmp", xmp.decode())
        return {"pnginfo": text}
    options: dict[str, Any] = {"quality": quality}
    if xmp:
        options["xmp"] = xmp
    if format == "jpeg":
        # 4:4:4 keeps the painted detail. No `optimize`: Pillow then sizes libjpeg's one-shot
        # buffer at W x H bytes, which detailed 4:4:4 images overflow ("Suspension not allowed").
        options["subsampling"] = 0
    elif format == "webp":
        # Lossy VP8 is 4:2:0 by definition and Pillow offers no sharp-YUV conversion; lossless
        # WebP keeps full chroma but is PNG-sized (DECISIONS.md, "Result formats"), so lossy.
        options["lossless"] = False
    elif format == "avif":
        # AV1's High profile, beyond AVIF's Baseline one: dav1d and libaom (the browsers') read it.
        options.update(subsampling="4:4:4", max_threads=_AVIF_THREADS)
    elif format == "heic":
        # HEVC's 4:4:4 is a range extension: libheif and recent Apple systems decode it, some
        # older hardware decoders do not (strukturag/libheif#1424); the painting's chroma wins.
        options["chroma"] = 444
    return options


def _quantised(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    """Round 0..255 floats to unsigned integers of the given depth (16 bits: 0..65535)."""
    if bit_depth == 8:
        return np.rint(np.clip(pixels, 0, 255)).astype(np.uint8)
    return np.rint(np.clip(pixels, 0, 255) * 257).astype(np.uint16)


def _write_tiff(
    samples: np.ndarray, destination: Path | BinaryIO, exif: bytes | None, xmp: bytes | None
) -> None:
    """Write an RGB TIFF (one deflated strip) with the sRGB profile, the EXIF directories and
    the XMP packet (tag 700, XMLPacket).

    Pillow can hold no 16-bit RGB image, and its libtiff writer, needed for compression, fails on
    an EXIF sub-directory; so the tags go through Pillow's EXIF serialiser and the pixels follow.
    """
    tags = Image.Exif()
    if exif:
        tags.load(exif)
    # Keep the byte order of the carried EXIF (its undefined-type blobs depend on it).
    tags.endian = tags.endian or "<"
    height, width, _ = samples.shape
    # The horizontal predictor stores differences to the left neighbour, wrapping like the format.
    differences = samples.astype(samples.dtype.newbyteorder(tags.endian))
    differences[:, 1:] -= samples[:, :-1]
    strip = zlib.compress(differences.tobytes())
    bits = samples.dtype.itemsize * 8
    tag = ExifTags.Base
    tags.update(
        {
            tag.ImageWidth: width,
            tag.ImageLength: height,
            tag.BitsPerSample: (bits, bits, bits),
            tag.Compression: _TIFF_ADOBE_DEFLATE,
            tag.PhotometricInterpretation: _TIFF_PHOTOMETRIC_RGB,
            tag.StripOffsets: 0,  # Pillow's serialiser adds the end of the directories to this
            tag.SamplesPerPixel: 3,
            tag.RowsPerStrip: height,
            tag.StripByteCounts: len(strip),
            tag.PlanarConfiguration: _TIFF_PLANAR_CONTIGUOUS,
            tag.Predictor: _TIFF_PREDICTOR_HORIZONTAL,
            tag.InterColorProfile: _SRGB_ICC,
        }
    )
    if xmp:
        tags[_TIFF_XMP] = xmp
    header = tags.tobytes()[len(b"Exif\x00\x00") :]
    with (
        destination.open("wb") if isinstance(destination, Path) else nullcontext(destination)
    ) as file:
        file.write(header)
        file.write(strip)
