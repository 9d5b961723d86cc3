"""The config's sections besides presets and notify: routing, watch, output, originals,
retries, logging, web and queue. Frozen, strict models; the defaults live here and nowhere else.

Checked as written only: whether loguru reads a rotation and whether a token file holds a
token needs the machine, so `checks.machine_problems` asks that, once, apart.
"""

import fnmatch
import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import PurePath
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
)

from daemon.config.outputs import check_name_pattern
from daemon.config.presets import Preset, PresetRef
from daemon.config.values import (
    STRICT,
    ExistingFile,
    Folder,
    NonNegative,
    Seconds,
    Text,
    describe,
)

LogLevel = Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"]
BitDepth = Literal[8, 16]
# The names of daemon.media.formats.WRITE_FORMATS, written out: that module imports Pillow, which
# loading a config must not (tests/test_output_formats.py holds the two equal).
OutputFormat = Literal["jpeg", "png", "tiff", "webp", "avif", "heic"]
MIN_TOKEN_CHARACTERS = 16
_FILE_MODE = re.compile(r"0?[0-7]{3}")
_EXTENSIONS = {
    "jpeg": "jpg",
    "png": "png",
    "tiff": "tif",
    "webp": "webp",
    "avif": "avif",
    "heic": "heic",
}
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]+\]")


# --- routing --------------------------------------------------------------------------------------


def _relative_pattern(pattern: str) -> str:
    """Refuse a pattern that could never match an inbox-relative path."""
    if pattern.startswith("/"):
        raise ValueError("patterns match the path relative to the inbox: drop the leading '/'")
    return pattern


class RoutingRule(BaseModel):
    """A case-insensitive fnmatch glob on the inbox-relative POSIX path (`*` crosses folders)."""

    model_config = STRICT
    pattern: Annotated[str, AfterValidator(_relative_pattern)] = Field(
        description="a glob on the path relative to the inbox, e.g. '*.png'"
    )
    preset: PresetRef = Field(description="the preset for photos that match")

    def matches(self, relative: PurePath) -> bool:
        """Whether the photo at `relative` (to the inbox) falls under this rule."""
        return fnmatch.fnmatchcase(relative.as_posix().casefold(), self.pattern.casefold())


class Routing(BaseModel):
    """Which preset a photo gets: its inbox subfolder, else the first matching rule, else policy."""

    model_config = STRICT
    default_preset: PresetRef | None = None
    rules: Annotated[
        tuple[RoutingRule, ...], Strict(False), BeforeValidator(lambda v: () if v is None else v)
    ] = ()
    unmatched: Literal["default", "ignore", "quarantine"] = "default"

    def preset_for(self, relative: PurePath, presets: Mapping[str, Preset]) -> str | None:
        """The preset name for a photo, or None: then `unmatched` says whether to ignore it."""
        if len(relative.parts) > 1:
            # casefold: on a case-insensitive share a user may well create "Swirl/" for "swirl".
            by_folder = {name.casefold(): name for name in presets}
            folder_preset = by_folder.get(relative.parts[0].casefold())
            if folder_preset is not None:
                return folder_preset
        for rule in self.rules:
            if rule.matches(relative):
                return rule.preset
        return self.default_preset if self.unmatched == "default" else None


# --- the inbox, the outbox and the originals ------------------------------------------------------


class WatchSettings(BaseModel):
    """How the inbox is watched: native events, polling (NAS shares), or native with a fallback."""

    model_config = STRICT
    mode: Literal["auto", "native", "poll"] = "auto"
    poll_interval_seconds: Seconds = 5.0
    settle_seconds: Seconds = 2.0  # a file must stay unchanged this long before it is taken
    rescan_interval_seconds: Seconds = 300.0  # a full scan catches events the watcher missed
    # A file that stays incomplete this long, with nothing to say its writer is gone (a share),
    # is handed over anyway and quarantined: a stalled copy may resume until then.
    stalled_seconds: Seconds = 3600.0

    @field_validator("stalled_seconds")
    @classmethod
    def _not_below_settle(cls, stalled_seconds: float, info: ValidationInfo) -> float:
        """A file is still for settle_seconds before it is looked at; stalled is longer."""
        settle = info.data.get("settle_seconds")
        if settle is not None and stalled_seconds < settle:
            raise ValueError(
                f"must be at least settle_seconds ({settle:g}), got {stalled_seconds:g}"
            )
        return stalled_seconds


def _octal_mode(value: Any) -> Any:
    """Permission bits given as a quoted octal string such as "0644"."""
    if isinstance(value, int) and not isinstance(value, bool):
        # Unquoted, YAML reads 644 as decimal and 0644 as octal: neither is what a user can see.
        raise ValueError(f'got the number {value}; quote the octal mode, e.g. "0644"')
    if not isinstance(value, str) or not _FILE_MODE.fullmatch(value):
        raise ValueError(f'expected an octal mode such as "0644", got {describe(value)}')
    return int(value, 8)


def _name_pattern(pattern: str) -> str:
    """An output name pattern, checked by the outbox's own rules."""
    try:
        check_name_pattern(pattern)
    except ValueError as error:
        raise ValueError(str(error).removeprefix(f"name_pattern {pattern!r}: ")) from None
    return pattern


class OutputSettings(BaseModel):
    """How results are written: format, quality, name, permissions and what they tell of the
    photo (its EXIF always; its location unless strip_location)."""

    model_config = STRICT
    format: OutputFormat = "jpeg"
    # jpeg, webp, avif and heic; png and tiff are lossless
    quality: Annotated[int, Field(ge=1, le=100)] = 92
    bit_depth: BitDepth = 8
    name_pattern: Annotated[str, AfterValidator(_name_pattern)] = (
        "{stem}"  # {stem} {preset} {hash8}
    )
    file_mode: Annotated[int, BeforeValidator(_octal_mode)] = 0o644
    strip_location: bool = False  # drop the photo's GPS directory from the result's EXIF

    @field_validator("bit_depth")
    @classmethod
    def _format_holds_it(cls, bit_depth: int, info: ValidationInfo) -> int:
        """16 bits per channel only where the format holds them (unchecked while format is bad)."""
        held = info.data.get("format")
        if bit_depth == 16 and held not in (None, "tiff"):
            raise ValueError(f"16 bits need format tiff; {held} holds 8")
        return bit_depth

    @property
    def ext(self) -> str:
        """The file extension for the format, without the dot."""
        return _EXTENSIONS[self.format]


class OriginalsSettings(BaseModel):
    """What happens to a photo once its result is durable; move_to None: <outbox>/originals."""

    model_config = STRICT
    policy: Literal["keep", "move", "delete"] = "move"
    move_to: Folder | None = None


class RetrySettings(BaseModel):
    """Retries of transient failures: the n-th retry waits backoff_seconds * 2**(n-1)."""

    model_config = STRICT
    max_attempts: Annotated[int, Field(ge=1)] = 3
    backoff_seconds: NonNegative = 30.0


# --- logging --------------------------------------------------------------------------------------


def _upper(value: Any) -> Any:
    """Log levels in any case, given back as loguru spells them."""
    known = isinstance(value, str) and value.upper() in get_args(LogLevel)
    return value.upper() if known else value


class LogSettings(BaseModel):
    """Logging; file logs go to <outbox>/logs/ with loguru's rotation and retention."""

    model_config = STRICT
    level: Annotated[LogLevel, BeforeValidator(_upper)] = "INFO"
    file: bool = True
    rotation: Text = "10 MB"  # "10 MB", "1 week", ...: loguru's syntax, asked of loguru in checks
    retention: Annotated[int, Field(ge=1)] = 5  # log files kept


# --- the web page ---------------------------------------------------------------------------------


def _listen(value: str) -> str:
    """host:port with an IP address or localhost for host ([...] for IPv6), port 0-65535."""
    host, separator, port = value.rpartition(":")
    if not separator or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port (such as 127.0.0.1:8750), got {value!r}")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare != "localhost":
        try:
            address = ipaddress.ip_address(bare)
        except ValueError:
            raise ValueError(
                f"{host!r}: expected an IP address ([...] for IPv6) or localhost"
            ) from None
        if address.version == 6 and bare == host:
            raise ValueError(f"an IPv6 address goes in brackets: [{host}]:{port}")
    return value


def _host_name(name: str) -> str:
    """A name the page may be reached by, as a browser sends it in Host (without the port)."""
    if not _HOST_NAME.fullmatch(name):
        raise ValueError(f"{name!r}: expected a host name or address, such as nas.local")
    return name.lower()


class WebSettings(BaseModel):
    """The web page inside `stylebox run`; without a token file it is read-only. `hosts`: the
    names it answers to besides loopback ones and the listen address (a page elsewhere can
    reach it through a DNS name rebound to this machine otherwise); empty with a non-loopback
    listen: any name, with a warning. The token file is read where the page starts; `stylebox
    check` and the start read it once before, to refuse a short token.

    `read_token_file`: a second token that only reads (a dashboard, a home automation, a
    family member's login); with it, the page's and the API's reads need a token too.
    `max_upload_mb`: the most one upload (a photo, a painting) may send; more is refused with
    413 while it arrives."""

    model_config = STRICT
    enabled: bool = True
    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:8750"
    token_file: ExistingFile | None = None
    read_token_file: ExistingFile | None = None
    max_upload_mb: Annotated[int, Field(ge=1, le=4096)] = 100
    hosts: Annotated[
        tuple[Annotated[str, Strict(), AfterValidator(_host_name)], ...], Strict(False)
    ] = ()

    @property
    def host(self) -> str:
        """The address to bind, without IPv6 brackets."""
        return self.listen.rpartition(":")[0].removeprefix("[").removesuffix("]")

    @property
    def port(self) -> int:
        """0 lets the system choose (the log names the port)."""
        return int(self.listen.rpartition(":")[2])

    @property
    def loopback(self) -> bool:
        """Only this machine can reach it."""
        return self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback

    @property
    def max_upload_bytes(self) -> int:
        """`max_upload_mb` in bytes (MiB)."""
        return self.max_upload_mb * 1024 * 1024


# --- several hosts --------------------------------------------------------------------------------


def _queue_url(url: str) -> str:
    """redis://, rediss:// (TLS) or unix:// with a host (or socket path), as redis-py reads it.
    A password may be in it (redis://:secret@host:6379/0): it is never logged (`shown_url`)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as error:
        raise ValueError(f"not a URL: {error}") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {parts.scheme!r}")
    if not (parts.hostname if parts.scheme != "unix" else parts.path):
        raise ValueError("expected a host, such as redis://nas.local:6379/0")
    if "password" in urllib.parse.parse_qs(parts.query):
        raise ValueError("give the password as redis://:password@host (it is then never shown)")
    return url


class QueueSettings(BaseModel):
    """Several hosts on one inbox (Dramatiq on Redis). Without `url`, one process does it all.

    With it, `stylebox run` is the coordinator (watcher, journal, outbox records, originals) and
    `stylebox worker` on each GPU host stylises; a worker's `inbox` and `outbox` are where that
    host mounts the coordinator's. `heartbeat_seconds` is how long a worker may go unheard
    before its job is given to another."""

    model_config = STRICT
    url: Annotated[str, AfterValidator(_queue_url)] | None = None
    local_worker: bool = True
    heartbeat_seconds: Annotated[float, Field(ge=2, le=3600, allow_inf_nan=False)] = 60.0

    @property
    def shown_url(self) -> str:
        """The URL without its password, for logs and pages."""
        if self.url is None:
            return "none"
        parts = urllib.parse.urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{netloc}"))
