"""Photos in: any readable photo becomes upright sRGB floats, checked before a pixel is decoded.

The engine sees only H x W x 3 float32 arrays in 0..255, so all the file-format quirks live here:
EXIF orientation, embedded ICC profiles, palette/alpha/CMYK/16-bit modes, decompression bombs and
files that are not images at all. Every problem with the input is an `InputError` naming the file;
problems with metadata alone (EXIF, ICC) never fail a photo, they are dropped. A file of several
frames or pages gives one picture (the first frame of an animation, the largest page of a TIFF),
and says so in `LoadedImage.note`.
"""

import errno
import io
import os
import re
import stat
import struct
import warnings
import zlib
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import filetype
import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

from daemon.errors import InputError
from daemon.media import ends, formats, jxl, nclx, raw
from daemon.media.files import DEFAULT_MAX_PIXELS, check_pixel_limit

formats.register_plugins()

SRGB_PROFILE = ImageCms.createProfile("sRGB")

# Pillow speaks through warnings.warn, which land raw on stderr (a TIFF tag with too many values,
# its own pixel limit). What matters reaches the user as an InputError or a LoadedImage note, and
# the pixel limit in force is the configured one, checked after each open. Filters are
# process-wide and catch_warnings is not thread-safe (the watcher, the worker and the page decode
# at once), so they are set once, here.
warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")  # in Pillow's DecompressionBombError message
_SNIFF_BYTES = 262  # what filetype reads to name a format, and a JPEG XL's header
_RAW_HEAD_BYTES = 64 * 1024  # enough of a TIFF for its first directory (a DNG's tag is there)
_BOXED_FORMATS = frozenset({"HEIF", "AVIF"})  # ISO base media files: whole when their boxes are
_MAX_PAGES = 64  # pages of a TIFF looked at for the largest: a crafted file may claim thousands

# Pillow's parsers raise whatever corrupt bytes lead them to; these are the ones seen in practice
# (RuntimeError: the JPEG XL plugin's, from libjxl).
_DECODE_ERRORS = (
    RuntimeError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
)
_METADATA_ERRORS = (OSError, SyntaxError, ValueError, IndexError, KeyError, TypeError, struct.error)

# EXIF 2.32 IFD0 attributes that describe the photo rather than how its pixels are stored; the
# source's strip offsets, bit depths, colour tables or thumbnails would describe the wrong picture.
_PORTABLE_EXIF_TAGS = frozenset(
    {
        ExifTags.Base.ImageDescription,
        ExifTags.Base.Make,
        ExifTags.Base.Model,
        ExifTags.Base.Orientation,
        ExifTags.Base.XResolution,
        ExifTags.Base.YResolution,
        ExifTags.Base.ResolutionUnit,
        ExifTags.Base.Software,
        ExifTags.Base.DateTime,
        ExifTags.Base.Artist,
        ExifTags.Base.Copyright,
        ExifTags.IFD.Exif,
        ExifTags.IFD.GPSInfo,
    }
)

# Greyscale modes wider than 8 bits, which Pillow's own convert("RGB") would clip rather than scale.
# "I" is read as 16-bit data (what PNG, PGM and TIFF put there); "F" follows Pillow's 0..255 scale.
_WIDE_GREY_SCALE: dict[str, float] = {
    "I;16": 1 / 257,
    "I;16L": 1 / 257,
    "I;16B": 1 / 257,
    "I;16N": 1 / 257,
    "I": 1 / 257,
    "F": 1.0,
}

# EXIF orientations that turn the stored image by 90 degrees (upright, its width is its height).
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})

# JPEGs are decoded at a reduced DCT scale and then shrunk in integer steps, both stopping this
# factor above the target so that the final LANCZOS pass still has detail to work with.
_REDUCING_GAP = 3.0
_REDUCIBLE_MODES = frozenset({"L", "RGB", "CMYK", "I", "F"})  # those Image.reduce takes


@dataclass(frozen=True)
class LoadedImage:
    """A decoded photo and what must travel with it to the output."""

    pixels: np.ndarray  # float32, H x W x 3, RGB, sRGB, 0..255, upright
    exif: bytes | None  # the photo's EXIF with Orientation 1; None if absent or unreadable
    source_size: tuple[int, int]  # (width, height) as stored in the file, before rotation/resize
    frames: int = 1  # frames of an animation or pages of a TIFF in the file; one of them is used
    note: str | None = None  # which one, when there were several: for the sidecar


def load_image(
    path: Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    long_side: int | None = None,
    upscale: bool = False,
    follow_symlinks: bool = True,
) -> LoadedImage:
    """Decode a photo to upright sRGB pixels, refusing anything that is not a usable image.

    `follow_symlinks=False` for inbox photos: checked as a regular file earlier, a photo can be
    swapped for a link before it is opened here, and a link is never followed out of the inbox.
    """
    if long_side is not None and long_side < 1:
        raise ValueError(f"long_side must be at least 1, not {long_side}")
    name = path.name
    with _open_regular_file(path, follow_symlinks) as file:
        if _is_raw(file, name):
            return _load_raw(file, name, max_pixels, long_side, upscale)
        return _load_with_pillow(file, name, max_pixels, long_side, upscale)


def _load_with_pillow(
    file: BinaryIO, name: str, max_pixels: int, long_side: int | None, upscale: bool
) -> LoadedImage:
    with _open_image(file, name, max_pixels) as image:
        frames, note = _frame_choice(image)
        source_size = image.size
        _draft(image, long_side)
        _decode(image, name)
        exif = _make_upright(image)
        size = None  # (width, height) after the resize, from the size `pixel_shape` sees
        if long_side is not None and (upscale or long_side < max(image.size)):
            size = _scaled_size(image.size, long_side)
        pixels = _srgb_pixels(_reduced(image, size), name)
    if size is not None:
        pixels = _resized(pixels, size)
    return LoadedImage(pixels=pixels, exif=exif, source_size=source_size, frames=frames, note=note)


def _is_raw(file: BinaryIO, name: str) -> bool:
    """Whether the open file goes to LibRaw (`raw.is_raw`); the file is left at its start."""
    head = file.read(_RAW_HEAD_BYTES)
    file.seek(0)
    return raw.is_raw(name, head)


def _load_raw(
    file: BinaryIO, name: str, max_pixels: int, long_side: int | None, upscale: bool
) -> LoadedImage:
    """A camera RAW demosaiced (`media.raw`), resized to exactly the size `pixel_shape` says."""
    with raw.RawPhoto(file, name, max_pixels) as photo:
        photo.unpack()
        source_size = photo.size
        pixels = photo.pixels(long_side)
        exif_source = photo.exif_source()
        size = _upright_size(source_size, photo.transposed, long_side, upscale)
    if pixels.shape[:2] != (size[1], size[0]):  # half size, or a sensor's non-square pixels
        pixels = _resized(pixels, size)
    exif = portable_exif(exif_source) if exif_source else None
    return LoadedImage(pixels=pixels, exif=exif, source_size=source_size)


def _upright_size(
    size: tuple[int, int], transposed: bool, long_side: int | None, upscale: bool = False
) -> tuple[int, int]:
    """(width, height) of the picture once turned upright and scaled to `long_side`."""
    width, height = size
    if transposed:
        width, height = height, width
    if long_side is not None and (upscale or long_side < max(width, height)):
        return _scaled_size((width, height), long_side)
    return width, height


def pixel_shape(
    path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, long_side: int | None = None
) -> tuple[int, int]:
    """(height, width) of what `load_image` would return, from the header alone: enough to
    group photos by size without decoding them. A file that does not say is an InputError.
    (A PNG turned by an EXIF after its pixels is found out, and skipped, once loaded; a JPEG XL
    is decoded by its plugin as it opens, bounded by the pixel limit first.)
    """
    with _open_regular_file(path, follow_symlinks=False) as file:
        if _is_raw(file, path.name):
            with raw.RawPhoto(file, path.name, max_pixels) as photo:
                width, height = _upright_size(photo.size, photo.transposed, long_side)
            return height, width
        with _open_image(file, path.name, max_pixels) as image:
            _draft(image, long_side)
            transposed = _orientation(image) in _TRANSPOSING_ORIENTATIONS
            width, height = _upright_size(image.size, transposed, long_side)
    return height, width


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation `_make_upright` applies; 1 when there is none or it cannot be read.

    A PNG's EXIF may follow its pixels; reading it would decode them, so only EXIF found before
    them counts. A JPEG XL is decoded upright by libjxl from its codestream's own orientation,
    which the format says wins over the EXIF's; unless it holds a JPEG kept whole (the plugin
    gives back that JPEG, EXIF orientation and all).
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    if _oriented_by_codestream(image):
        return 1
    with suppress(*_DECODE_ERRORS):
        return image.getexif().get(ExifTags.Base.Orientation, 1)
    return 1


def is_whole(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bool:
    """True when `path` is a whole image that `load_image` may take, found out cheaply: the
    watcher asks this of every new file, and the worker decodes the photo anyway.

    A JPEG is decoded at its smallest DCT scale (1/8 a side: every byte of its entropy-coded data
    is still read, so a cut file fails) and must reach its EOI marker; a PNG's chunks are read up
    to IEND with their CRCs checked, no pixel inflated; a HEIC or AVIF must have its boxes end
    where the file does, no pixel decoded (a 48 MP HEIC would cost the watcher hundreds of MB); a
    camera RAW's sensor data is unpacked, not demosaiced; other formats are decoded in their own
    mode, never as floats. A preallocated file, whose tail is zeros until its writer gets there,
    decodes as a JPEG often enough: the end checks (`ends.reaches_end`) catch it. Never follows
    a symlink: the watcher hands those over without asking.
    """
    try:
        with _open_regular_file(path, follow_symlinks=False) as file:
            if _is_raw(file, path.name):
                with raw.RawPhoto(file, path.name, max_pixels) as photo:
                    photo.unpack()
                return True
            with _open_image(file, path.name, max_pixels) as image:
                if image.format == "PNG":
                    image.verify()
                elif image.format not in _BOXED_FORMATS:
                    image.draft(None, (1, 1))  # only a JPEG has a draft scale; others ignore it
                    _decode(image, path.name)
    except (InputError, *_DECODE_ERRORS):
        return False
    return is_complete(path)


def image_type(file: BinaryIO) -> str | None:
    """The MIME type of the image in an open file, from its content, never its name; None when
    it is not an image Pillow knows. The file is left at its start."""
    try:
        with Image.open(file) as image:  # the header only: no pixel is decoded
            return Image.MIME.get(image.format or "")
    except (*_DECODE_ERRORS, Image.DecompressionBombError):
        return None
    finally:
        file.seek(0)


def is_complete(path: Path) -> bool:
    """False when the file visibly stops short of its format's end (`ends.reaches_end`): a
    writer still at work, or a preallocated file half filled. `is_whole` asks this besides."""
    try:
        with _open_regular_file(path) as file:
            return ends.reaches_end(file)
    except (InputError, OSError, ValueError):
        return False


def _open_regular_file(path: Path, follow_symlinks: bool = True) -> BinaryIO:
    """Open without blocking and check the opened file itself, so a FIFO or a swap cannot hang."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise InputError(f"{path.name}: a symlink (never followed)") from exc
        raise InputError(f"{path.name}: cannot open ({exc.strerror})") from exc
    status = os.fstat(descriptor)
    problem = None
    if not stat.S_ISREG(status.st_mode):
        problem = "not a regular file"
    elif status.st_size == 0:
        problem = "empty file"
    if problem is not None:
        os.close(descriptor)
        raise InputError(f"{path.name}: {problem}")
    return os.fdopen(descriptor, "rb")


def _open_image(file: BinaryIO, name: str, max_pixels: int) -> Image.Image:
    """Read only the header and refuse oversized images before a single pixel is decoded; the
    image is left at the frame or page `load_image` uses (`_frame_choice` says which)."""
    _let_pillow_open(max_pixels)
    head = file.read(_SNIFF_BYTES)
    file.seek(0)
    if jxl.is_jxl(head):  # its plugin decodes it all as it opens: the limit goes first
        declared = jxl.declared_size(file)
        if declared is not None:
            check_pixel_limit(name, declared, max_pixels)
    try:
        image = Image.open(file)
    except Image.DecompressionBombError as exc:
        # Pillow's own refusal, far above the configured limit: said in the configured terms.
        found = _BOMB_PIXELS.search(str(exc))
        pixels = f"{int(found[1]):,} pixels" if found else "more pixels than that"
        raise InputError(
            f"{name}: {pixels}, over the limit of {max_pixels:,} (max_input_pixels)"
        ) from exc
    except UnidentifiedImageError as exc:
        raise InputError(_unreadable(name, head)) from exc
    except RuntimeError as exc:  # libjxl's, which says nothing a user could act on
        raise InputError(_unreadable(name, head)) from exc
    except _DECODE_ERRORS as exc:
        raise InputError(f"{name}: cannot decode {_kind(head)} ({_one_line(exc)})") from exc
    try:
        _seek_used_frame(image, name, max_pixels)
    except BaseException:
        image.close()
        raise
    return image


def _let_pillow_open(max_pixels: int) -> None:
    """Raise Pillow's own pixel limit to the configured one where that is higher: Pillow refuses
    at twice its limit in Image.open, before the configured limit could be applied. Only ever
    raised, so threads racing here agree."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and limit < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _seek_used_frame(image: Image.Image, name: str, max_pixels: int) -> None:
    """Go to the frame `load_image` uses, checked against `max_pixels`: the first frame of an
    animation, the largest page of a TIFF (a pyramid's full size, a scan's page) within the
    limit; InputError when that is over it."""
    if image.format == "TIFF" and getattr(image, "n_frames", 1) > 1:
        sizes = []
        for page in range(min(image.n_frames, _MAX_PAGES)):
            image.seek(page)
            sizes.append(image.size[0] * image.size[1])
        within = [page for page, pixels in enumerate(sizes) if pixels <= max_pixels]
        if within:  # the largest, and of equal ones the first
            image.seek(max(within, key=lambda page: (sizes[page], -page)))
            return
        image.seek(0)
    check_pixel_limit(name, image.size, max_pixels)


def _kind(head: bytes) -> str:
    """What the file's first bytes say it is ("HEIC image"), for a reason naming the format."""
    if jxl.is_jxl(head):  # not among filetype's
        return "JPEG XL image"
    kind = filetype.guess(head)
    if kind is None or not kind.mime.startswith("image/"):
        return "image"
    return f"{kind.mime.removeprefix('image/').removeprefix('x-').upper()} image"


def _unreadable(name: str, head: bytes) -> str:
    """Why Pillow and its plugins found no image: a format this install lacks the library for
    (JPEG XL without its extra), a known format that does not decode (a corrupt HEIC, say, which
    each plugin turns down alike), or no format this install reads."""
    kind = _kind(head)
    if kind == "image":
        return f"{name}: not an image in a format this install reads (stylebox check lists them)"
    absent = formats.missing_named(kind.removesuffix(" image"))
    if absent is not None:
        return f"{name}: a {kind}, which this install does not read ({absent.install_hint()})"
    return f"{name}: cannot decode this {kind} (corrupt, or cut short)"


def _frame_choice(image: Image.Image) -> tuple[int, str | None]:
    """How many frames or pages the file holds, and a note on the one used when several.

    An MPO (a camera's JPEG with its previews or depth maps) says nothing: its first image is
    the photo by definition.
    """
    frames = getattr(image, "n_frames", 1)
    if frames <= 1 or image.format == "MPO":
        return 1, None
    if image.format == "TIFF":
        page = image.tell()
        largest = "the largest"
        if frames > _MAX_PAGES:
            largest += f" of the first {_MAX_PAGES}"
        return frames, (
            f"a TIFF of {frames} pages: page {page + 1} ({image.width}x{image.height}, "
            f"{largest}) was used"
        )
    if image.format == "HEIF":  # a burst or a set of exposures: pillow-heif opens the primary
        return frames, f"a HEIF of {frames} images: the primary one was used"
    return frames, f"an animation of {frames} frames: the first was used"


def _draft(image: Image.Image, long_side: int | None) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when the output is that much smaller: far
    cheaper for big photos. Only the header changes; other formats ignore it."""
    if long_side is not None:
        image.draft(None, _scaled_size(image.size, long_side * _REDUCING_GAP))


def _decode(image: Image.Image, name: str) -> None:
    """Decode now, so a truncated or corrupt file fails here as an InputError, not later."""
    try:
        image.load()
    except _DECODE_ERRORS as exc:
        kind = f"{image.format} image" if image.format else "image"
        raise InputError(f"{name}: cannot decode {kind} ({_one_line(exc)})") from exc


def _oriented_by_codestream(image: Image.Image) -> bool:
    """A JPEG XL not holding a JPEG: libjxl has applied its codestream's orientation already.
    (A HEIF's irot/imir are applied by libheif, and pillow-heif sets its EXIF's to 1.)"""
    return image.format == "JXL" and not getattr(image, "jpeg", False)


def _make_upright(image: Image.Image) -> bytes | None:
    """Apply the EXIF orientation in place, once; a corrupt EXIF means no rotation and no EXIF."""
    try:
        exif = image.getexif()
        original = exif.tobytes() if exif else None
        if not _oriented_by_codestream(image):
            ImageOps.exif_transpose(image, in_place=True)
    except _METADATA_ERRORS:
        return None
    return portable_exif(original) if original else None


def portable_exif(data: bytes) -> bytes | None:
    """EXIF fit for an output: descriptive tags only, Orientation 1; None if it cannot be parsed."""
    exif = Image.Exif()
    try:
        exif.load(data)
        for tag in set(exif) - _PORTABLE_EXIF_TAGS:
            del exif[tag]
        exif[ExifTags.Base.Orientation] = 1
        return exif.tobytes()
    except _METADATA_ERRORS:
        return None


def _srgb_pixels(image: Image.Image, name: str) -> np.ndarray:
    """Any mode to H x W x 3 float32 sRGB in 0..255, alpha flattened onto white; colour from an
    ICC profile or, where a HEIF has none, from its nclx numbers (`media.nclx`)."""
    if image.mode in _WIDE_GREY_SCALE:
        # Pillow's colour management cannot transform these modes, so any profile is ignored.
        grey = np.asarray(image, dtype=np.float32) * _WIDE_GREY_SCALE[image.mode]
        return np.repeat(np.clip(grey, 0, 255)[..., np.newaxis], 3, axis=2)
    icc_profile = image.info.get("icc_profile")
    described = image.info.get("nclx_profile") if not icc_profile else None
    try:
        if image.has_transparency_data:
            image = image.convert("RGBA")
        elif image.mode not in ("L", "RGB", "CMYK"):
            image = image.convert("RGB")
        image = _to_srgb(image, icc_profile)
        if image.mode == "RGBA":
            rgba = np.asarray(image, dtype=np.float32)
            opacity = rgba[..., 3:] / 255
            pixels = rgba[..., :3] * opacity + 255 * (1 - opacity)
        else:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    except ValueError as exc:  # Pillow has no conversion for this mode (LAB, HSV, ...)
        raise InputError(f"{name}: unsupported colour mode {image.mode}") from exc
    if isinstance(described, dict) and nclx.needs_conversion(described):
        pixels = nclx.to_srgb(pixels, described)
    return pixels


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Convert from the embedded profile; one that is unreadable or fits no mode is ignored."""
    if not icc_profile:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        return ImageCms.profileToProfile(
            image,
            source,
            SRGB_PROFILE,
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
            outputMode="RGBA" if image.mode == "RGBA" else "RGB",
        )
    except (ImageCms.PyCMSError, OSError):
        return image


def _scaled_size(size: tuple[int, int], long_side: float) -> tuple[int, int]:
    """(width, height) with the long side scaled to `long_side`, aspect kept, no side below 1 px."""
    width, height = size
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _reduced(image: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    """Shrunk by a whole factor in its own mode while it stays _REDUCING_GAP above `size`, so
    the float conversion holds a few megapixels, not the camera's 24 (a JPEG's draft scale does
    this in the decoder). Modes with alpha are left whole: a box average of unpremultiplied
    colours would bleed hidden colours into the edges."""
    if size is None or image.mode not in _REDUCIBLE_MODES or image.has_transparency_data:
        return image  # a transparency key (tRNS) is alpha too
    factor = int(min(image.width / size[0], image.height / size[1]) / _REDUCING_GAP)
    return image.reduce(factor) if factor > 1 else image


def _resized(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """LANCZOS per channel in float to (width, height), so 16-bit sources keep their precision."""
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(pixels[..., channel])).resize(
                size, Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP
            )
        )
        for channel in range(3)
    ]
    # LANCZOS overshoots at hard edges.
    return np.clip(np.stack(channels, axis=2), 0, 255)


def _one_line(exc: BaseException) -> str:
    """Pillow's message on one line, for log lines and quarantine notes."""
    return " ".join(str(exc).split()) or type(exc).__name__
