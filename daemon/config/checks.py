"""What a config asks of the machine, checked once and apart from parsing it.

Parsing (`load_config`) is pure: it opens the YAML and no other file (paths are resolved and
looked up, so that a missing painting is reported with the file's other faults), adds no log
handler and starts no service, so any code may load a config for its values. What only the
machine can answer is asked here instead, as OCRmyPDF's `check_options` does once its options
are parsed: whether loguru reads the rotation, whether the web token and the webhook secrets
can be read and hold something, whether Apprise is installed and knows each URL. `stylebox
check`, the daemon's start and each reload (service.loop) load with `check_machine=True`,
which runs `machine_problems` once the file itself is valid and cites each problem by its line
like the file's own (load.py), so a file that `check` accepts is never refused at start, nor
the reverse. The secrets stay files in the config; the page and the webhook channel read them
where they use them.
"""

import importlib.util
import tempfile
from pathlib import Path

from loguru import logger

from daemon.config.models import Config, PresetsConfig
from daemon.config.notify import AppriseSettings, NotifySettings
from daemon.config.sections import MIN_TOKEN_CHARACTERS, LogSettings, WebSettings
from daemon.errors import InputError
from daemon.paths import missing_root

Problem = tuple[tuple[str | int, ...], str]  # where in the file (pydantic's loc), and what
STYLE_CHECK_SIDE = 64  # px a side the paintings are decoded at here: every byte is still read


def machine_problems(config: Config | PresetsConfig) -> list[Problem]:
    """(field, message) for each thing the machine refuses, in the order of the file's sections."""
    return [
        *_folders(config),
        *_style_images(config),
        *_output_format(config),
        *_rotation(config.logging),
        *_token(config.web),
        *_secrets(config.notify),
        *_apprise(config.notify.apprise),
    ]


def _folders(config: Config | PresetsConfig) -> list[Problem]:
    """inbox, outbox, state_dir and paintings: a file where a folder is named, or no folder at
    all, is refused here as the daemon's start refuses it (service.loop), not left for the start
    to find. They are never created: one missing is most often a share that is not mounted."""
    problems: list[Problem] = []
    for field in ("inbox", "outbox", "state_dir"):
        path = getattr(config, field)
        if path is None:
            continue
        if path.exists() and not path.is_dir():
            problems.append(((field,), f"{path}: not a folder"))
        elif not path.exists():
            problems.append(((field,), missing_root(field, path)))
    paintings = config.paintings  # checked alike, but optional: a reload keeps the presets it had
    if paintings is not None and not paintings.is_dir():
        why = "not a folder" if paintings.exists() else "no such folder (is the share mounted?)"
        problems.append((("paintings",), f"{paintings}: {why}"))
    return problems


def _output_format(config: Config | PresetsConfig) -> list[Problem]:
    """output.format written by a library this install has: a platform without a pillow-heif
    wheel (or a Pillow built without AVIF) is refused at the start, not at each photo's end."""
    output = getattr(config, "output", None)
    if output is None:
        return []
    from daemon.media import formats

    if output.format in formats.writes():
        return []
    return [
        (
            ("output", "format"),
            f"{output.format}: this install cannot write it (it writes "
            f"{', '.join(formats.writes())})",
        )
    ]


def _style_images(config: Config | PresetsConfig) -> list[Problem]:
    """Each preset's paintings decoded as the daemon's start decodes them (the header, then
    every byte, bounded by max_input_pixels; at a small size, which a JPEG is decoded at
    directly): a painting that is not a whole image is named with its preset here, instead
    of stopping the start with a message that reads like one about a photo. (Pillow is
    imported here, not with the config, which loads without it.)"""
    from daemon.media import decode

    problems: list[Problem] = []
    for name, preset in config.presets.items():
        for index, style in enumerate(preset.styles):
            try:
                decode.load_image(
                    style.path, max_pixels=config.max_input_pixels, long_side=STYLE_CHECK_SIDE
                )
            except InputError as error:  # its message starts with the file's name
                why = str(error).removeprefix(f"{style.path.name}: ")
                where = ("presets", name, "style", index, "image")
                problems.append((where, f"{style.path}: {why}"))
    return problems


def _rotation(logging: LogSettings) -> list[Problem]:
    """loguru's own rotation syntax, asked of loguru: it would refuse it only when the file log
    is opened. A handler that never writes (delay, and a filter that takes no record) is added
    to parse it, and removed."""
    path = Path(tempfile.gettempdir()) / "stylebox-rotation-check.log"
    try:
        handler = logger.add(path, rotation=logging.rotation, delay=True, filter=lambda _: False)
    except (ValueError, TypeError) as error:
        return [(("logging", "rotation"), f"not a rotation loguru reads ({error})")]
    logger.remove(handler)
    return []


def _token(web: WebSettings) -> list[Problem]:
    """The token files readable, each token long enough not to be guessed, and the read token
    not the token itself (which would make it no read token)."""
    problems: list[Problem] = []
    tokens: dict[str, str] = {}
    for field in ("token_file", "read_token_file"):
        path = getattr(web, field)
        if path is None:
            continue
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            problems.append((("web", field), f"{path}: cannot read it: {error}"))
            continue
        if len(token) < MIN_TOKEN_CHARACTERS or any(c.isspace() for c in token):
            message = (
                f"{path}: the token must be one word of at least {MIN_TOKEN_CHARACTERS} "
                "characters (make one with: python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
            problems.append((("web", field), message))
            continue
        tokens[field] = token
    if "read_token_file" in tokens and tokens.get("token_file") == tokens["read_token_file"]:
        message = f"{web.read_token_file}: holds web.token_file's token; a read token must differ"
        problems.append((("web", "read_token_file"), message))
    return problems


def _secrets(notify: NotifySettings) -> list[Problem]:
    """Each webhook's secret file readable and not empty."""
    problems: list[Problem] = []
    for index, hook in enumerate(notify.webhooks):
        path, where = hook.secret_file, ("notify", "webhooks", index, "secret_file")
        if path is None:
            continue
        try:
            secret = path.read_bytes().strip()
        except OSError as error:
            problems.append((where, f"{path}: cannot read it: {error.strerror}"))
            continue
        if not secret:
            problems.append((where, f"{path}: empty; put the shared secret in it"))
    return problems


def _apprise(apprise_settings: AppriseSettings) -> list[Problem]:
    """Apprise installed, and each URL one it knows (not shown: they hold passwords)."""
    urls, where = apprise_settings.urls, ("notify", "apprise", "urls")
    if not urls:
        return []
    if importlib.util.find_spec("apprise") is None:
        return [(where, "needs Apprise: pip install 'stylebox[notify]'")]
    import apprise

    for index, url in enumerate(urls):
        if not apprise.Apprise().add(url):
            return [(where, f"URL {index + 1} is not one Apprise knows (see its wiki's list)")]
    return []
