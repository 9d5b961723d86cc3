"""Which photo formats this install reads and writes, and the plugins that teach them to Pillow.

Pillow reads JPEG, PNG, TIFF, WebP, AVIF, GIF and BMP itself. HEIC/HEIF comes from pillow-heif, a
Pillow plugin registered here, once, on import; camera RAW (DNG and the makers' own formats) from
rawpy, LibRaw's binding, which `media.raw` calls directly. Both are core dependencies: an iPhone's
first photo is a HEIC and a camera's is a RAW, and a user should not have to learn the word
"extra" to have them painted. JPEG XL (pillow-jxl-plugin) is the `jxl` extra: rare on a first
day, and GPL-3.0 (DECISIONS.md). A format whose library is missing (that extra, or a platform
without a wheel) is the only one lost: `reads()` and `stylebox check` say so.
"""

import importlib.util
from dataclasses import dataclass

from PIL import features


@dataclass(frozen=True)
class Format:
    """A family of files as a user names it, with the suffixes it usually has."""

    name: str
    suffixes: tuple[str, ...]
    provider: str  # the library that reads it, as pip names it
    extra: str | None = None  # the stylebox extra that installs it, when it is not core

    def install_hint(self) -> str:
        """How a user gets this format read: the extra, or the library stylebox should have."""
        if self.extra is not None:
            return f"pip install 'stylebox[{self.extra}]'"
        return f"{self.provider} is not installed"


# Camera RAW files LibRaw reads, by the suffixes cameras give them: a NEF or a CR2 is also a TIFF
# whose first page is a small preview, so the suffix (and a DNG's own tag) sends a file to
# LibRaw before Pillow could paint that preview instead of the photo.
RAW_SUFFIXES = (
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf",
    ".rw2", ".rwl", ".pef", ".srw", ".x3f", ".3fr", ".fff", ".iiq", ".erf", ".kdc", ".dcr",
    ".mrw", ".mos", ".mef", ".raw",
)  # fmt: skip

READ_FORMATS = (
    Format("JPEG", (".jpg", ".jpeg"), "pillow"),
    Format("PNG", (".png",), "pillow"),
    Format("TIFF", (".tif", ".tiff"), "pillow"),
    Format("WebP", (".webp",), "pillow"),
    Format("AVIF", (".avif",), "pillow"),
    Format("HEIC/HEIF", (".heic", ".heif", ".hif"), "pillow-heif"),
    Format("JPEG XL", (".jxl",), "pillow-jxl-plugin", extra="jxl"),
    Format("camera RAW", RAW_SUFFIXES, "rawpy"),
    Format("GIF", (".gif",), "pillow"),
    Format("BMP", (".bmp",), "pillow"),
)

# What `output.format` may name, in the order the README lists them.
WRITE_FORMATS = ("jpeg", "png", "tiff", "webp", "avif", "heic")

_PILLOW_CODECS = {"WebP": "webp", "AVIF": "avif"}  # built into Pillow's wheel, not every build
_MODULES = {"pillow-heif": "pillow_heif", "pillow-jxl-plugin": "pillow_jxl", "rawpy": "rawpy"}


def _has(provider: str) -> bool:
    module = _MODULES.get(provider)
    return module is None or importlib.util.find_spec(module) is not None


def _readable(fmt: Format) -> bool:
    codec = _PILLOW_CODECS.get(fmt.name)
    if codec is not None and not features.check(codec):
        return False
    return _has(fmt.provider)


def reads() -> list[Format]:
    """The input formats this install can decode."""
    return [fmt for fmt in READ_FORMATS if _readable(fmt)]


def missing() -> list[Format]:
    """Input formats whose library is not installed here: said by `stylebox check`."""
    return [fmt for fmt in READ_FORMATS if not _readable(fmt)]


def missing_named(kind: str) -> Format | None:
    """The missing format a file's kind ("JPEG XL", "HEIC", as `decode` names it) belongs to."""
    for fmt in missing():
        if kind.upper() in fmt.name.upper().split("/"):
            return fmt
    return None


def writes() -> list[str]:
    """The `output.format` values this install can encode."""
    available = {"webp": features.check("webp"), "avif": features.check("avif")}
    available["heic"] = _has("pillow-heif")
    return [name for name in WRITE_FORMATS if available.get(name, True)]


def summary() -> str:
    """One line each for reading and writing, for `stylebox check` and `--version`."""
    line = "reads: " + ", ".join(fmt.name for fmt in reads())
    absent = missing()
    if absent:
        line += " (not installed: " + ", ".join(f"{f.name} [{f.provider}]" for f in absent) + ")"
    return line + "\nwrites: " + ", ".join(writes())


def register_plugins() -> None:
    """Teach Pillow HEIC/HEIF and JPEG XL, where their plugins are installed; idempotent.

    pillow-heif's own AVIF support is left off: Pillow's built-in AVIF plugin reads those.
    """
    if _has("pillow-heif"):
        import pillow_heif

        # Thumbnails, depth maps and auxiliary images are never painted: not read at all.
        pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
    if _has("pillow-jxl-plugin"):
        import pillow_jxl  # noqa: F401  # registering is what importing it does
