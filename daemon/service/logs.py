"""The daemon's log: every record one line whatever it carries (a photo's name with a newline
cannot forge a line), to stderr (journald under systemd) and a rotating file in <outbox>/logs/
that is never written under the mount point of an outbox share gone. Set up by the daemon once
its config is read (`configure_logging`), again at each reload."""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import re
import sys
import time
import traceback
from typing import Any

from loguru import logger

from daemon.config import Config
from daemon.outbox import folder_mode_for, make_folder
from daemon.service.roots import RootWatch

LOG_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss}</green> <level>{level: <7}</level> {extra[job_tag]}{message}"
    "{extra[traceback]}\n"
)
LOG_FILE_NAME = "stylebox.log"
# What must not reach a log line as it is: C0 and C1 controls and DEL (a newline would start a
# forged line), the Unicode line separators and bidirectional overrides (a line that reads
# otherwise than it is), and lone surrogates (bytes of a name that is not UTF-8, which no
# sink can encode).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_FRAME = re.compile(r'[ |]*File "')  # a chunk of a traceback that is one frame
_log_file: LogFile | None = None  # the one configure_logging added last


def configure_logging(config: Config, *, verbose: bool = False, to_file: bool = True) -> None:
    """stderr (journald under systemd) and, with `to_file`, a rotating file in <outbox>/logs/.

    Every record is one line, whatever it carries (see `escaped`); a traceback follows its
    record's line, without local variables (loguru's `diagnose` would write the photos' names
    and the requests' contents into it, and a client could have them written again and again).
    """
    global _log_file
    level = "DEBUG" if verbose else config.logging.level
    logger.remove()  # the file's queue is written out first: its count of missed lines is final
    previous, _log_file = _log_file, None
    if to_file and config.logging.file:
        # made while the logger has no sink: it copies the logger
        _log_file = LogFile(config, previous)
    logger.configure(extra={"job_tag": "", "traceback": ""}, patcher=_patch_record)
    quiet = {"format": _format, "backtrace": False, "diagnose": False}
    logger.add(sys.stderr, level=level, **quiet)
    if _log_file is not None:
        logger.add(_log_file, level=level, enqueue=True, **quiet)


def escaped(text: str) -> str:
    """`text` on one line, readable: a newline as \\n, other controls as \\xNN or \\uNNNN, and
    a byte of a name that is not UTF-8 (os.fsdecode's surrogate) as \\xNN, the byte it was."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    character = match.group()
    if character in _NAMED:
        return _NAMED[character]
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _format(record: dict) -> str:
    """LOG_FORMAT, as a function so that loguru adds no traceback of its own."""
    return LOG_FORMAT


def _patch_record(record: dict) -> None:
    """Make the record safe for every sink at once: its message and extra fields escaped, its
    job tag and its traceback (escaped) made."""
    extra = record["extra"]
    for key, value in extra.items():
        if isinstance(value, str):
            extra[key] = escaped(value)
    job = extra.get("job")
    extra["job_tag"] = f"[job {escaped(str(job))}] " if job is not None else ""
    extra["traceback"] = _traceback(record["exception"])
    record["message"] = escaped(record["message"])


def _traceback(exception: Any) -> str:
    """The record's traceback as lines after its own, none of them able to pass for a record:
    a frame's lines are Python's, but the exception's message (which may carry a file name)
    is escaped onto its one line."""
    if exception is None or exception.type is None:
        return ""
    lines: list[str] = []
    for chunk in traceback.format_exception(exception.type, exception.value, exception.traceback):
        text = chunk.strip("\n")
        if text:
            lines += map(escaped, text.split("\n")) if _FRAME.match(text) else [escaped(text)]
    return "".join("\n" + line for line in lines)


class LogFile:
    """The log file's sink: loguru's own rotating file, written through a logger of its own
    that hands a failed write back here (catch=False) instead of printing a traceback to stderr
    for every record. A full or vanished disk is one line on stderr when the file stops taking
    lines and one when it takes them again; stderr has every record meanwhile.

    Nothing is written, and the file is not even open, while the outbox is gone or not the
    mount it was (service/roots.py): loguru makes the missing folders whenever it opens the
    file (even on closing it, when it watches the file), and the log would land on the local
    disk under the share's mount point. The file is opened again once the outbox is back."""

    def __init__(self, config: Config, previous: LogFile | None = None) -> None:
        """The sink for `config`'s log file; `previous`, the one it replaces on a reload,
        hands on what it knew: the outbox as it was at the start, and an outage under way
        (still one line for it)."""
        self.path = config.log_dir / LOG_FILE_NAME
        self.missed = 0  # lines not written since the file stopped taking them
        self._outbox = RootWatch({"outbox": config.outbox})
        if previous is not None and previous.path == self.path:
            self._outbox, self.missed = previous._outbox, previous.missed
        self._folder_mode = folder_mode_for(config.output.file_mode)
        self._file_options = {
            "rotation": config.logging.rotation,
            "retention": config.logging.retention,
            "opener": functools.partial(_open_with_mode, mode=config.output.file_mode),
        }
        # Copied while the logger has no sink; the daemon's lines come formatted and escaped.
        self._writer = copy.deepcopy(logger)
        self._writer.configure(patcher=lambda record: None)
        self._file: int | None = None  # the writer's file sink, while open

    def write(self, message: str) -> None:
        """Called by loguru's queue thread, one formatted line at a time."""
        why = self._outbox.problem()
        if why is not None:
            self._close()  # open on the share that went: opened afresh once it is back
        else:
            try:
                self._open()
                self._writer.opt(raw=True).log("TRACE", "{}", message)
            except Exception as exc:  # OSError mostly: ENOSPC, EIO, ESTALE
                reason = exc.strerror if isinstance(exc, OSError) else type(exc).__name__
                why = f"cannot write to it ({reason})"
        if why is not None:
            self.missed += 1
            if self.missed == 1:
                _to_stderr(
                    "WARNING", f"log file {self.path}: {why}; logging to stderr only until it can"
                )
            return
        if self.missed:
            note = (
                f"log file {self.path}: writing to it again; {self.missed} line(s) could not "
                "be written to it (they went to stderr)"
            )
            _to_stderr("INFO", note)
            with contextlib.suppress(Exception):
                self._writer.opt(raw=True).log("TRACE", "{}", _line("INFO", note))
            self.missed = 0

    def stop(self) -> None:
        """Close the file (loguru calls this when the sink is removed)."""
        self._close()

    def _open(self) -> None:
        """Add the file sink, once the outbox is there to hold it: `logs/` made like the
        outbox's other folders (file_mode made searchable, whatever the umask)."""
        if self._file is not None:
            return
        make_folder(self.path.parent, self._folder_mode)
        self._file = self._writer.add(
            self.path, level=0, format="{message}", catch=False, **self._file_options
        )

    def _close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):  # a flush into a share gone
                self._writer.remove(self._file)
            self._file = None


def _line(level: str, message: str) -> str:
    """A line like LOG_FORMAT's, for what the log file's sink says itself."""
    return f"{time.strftime('%Y-%m-%d %H:%M:%S')} {level: <7} {escaped(message)}\n"


def _to_stderr(level: str, message: str) -> None:
    """Straight to stderr: a sink must never log through loguru (its handler's lock is held)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(_line(level, message))
        sys.stderr.flush()


def _open_with_mode(path: str, flags: int, *, mode: int) -> int:
    """open() opener for the log file: output.file_mode like the outputs, whatever the umask."""
    descriptor = os.open(path, flags, mode)
    os.fchmod(descriptor, mode)
    return descriptor
