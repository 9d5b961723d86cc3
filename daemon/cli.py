"""Sub-commands: the only place that prints and maps errors to exit codes. Logging is set up
here, and again by the daemon once its config is read (service/logs.configure_logging)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import select
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, get_args

from loguru import logger
from pydantic import TypeAdapter, ValidationError

from daemon import __version__
from daemon.config.models import BitDepth, OutputSettings, PresetModel, check_weights
from daemon.engine.settings import (
    COLOUR_MODES,
    DEFAULT_EVALUATIONS,
    FINISHES,
    FULL_SIZE,
    PRECISIONS,
    StyleSettings,
)
from daemon.errors import ExitCode, StyleboxError, UsageError

DEFAULTS = StyleSettings()
OUTPUT = OutputSettings()


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see --help)\n")


class _Version(argparse.Action):
    """--version: the version, and the photo formats this install reads and writes (looked up
    only when asked, so other commands do not pay for it)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="version and formats, then exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from daemon.media import formats

        print(f"stylebox {__version__}\n{formats.summary()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The command line; defaults are read from StyleSettings and the config's models."""
    parser = _Parser(prog="stylebox", description="Drop-folder neural style transfer.")
    parser.add_argument("--version", action=_Version)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    stylize = sub.add_parser("stylize", help="stylize one photo and exit")
    stylize.add_argument("photo", type=Path)
    stylize.add_argument("--style", type=Path, action="append", help="painting (repeat to blend)")
    stylize.add_argument("--preset", help="a preset from --config instead of --style")
    stylize.add_argument("--config", type=Path, help="config file holding --preset")
    stylize.add_argument(
        "--out", type=Path, required=True, help="output .jpg, .png, .tif, .webp, .avif or .heic"
    )
    stylize.add_argument(
        "--size",
        type=_size,
        help=f"long side in px, or full: the photo's own (default {DEFAULTS.size})",
    )
    stylize.add_argument(
        "--single-scale",
        action="store_true",
        default=None,
        help="one scale at any size, not coarse to fine (for comparisons)",
    )
    stylize.add_argument(
        "--block",
        type=int,
        metavar="PX",
        help="evaluate in blocks of PX (exact; for tests and benchmarks: blocks are chosen "
        "by the device's memory otherwise)",
    )
    stylize.add_argument("--alpha", type=float, help=f"content weight (default {DEFAULTS.alpha:g})")
    stylize.add_argument("--beta", type=float, help=f"style weight (default {DEFAULTS.beta:g})")
    stylize.add_argument(
        "--steps", type=int, help=f"at most N evaluations (default {DEFAULT_EVALUATIONS})"
    )
    stylize.add_argument(
        "--finish",
        choices=FINISHES,
        help=f"stop sooner (draft) or later (fine) once progress slows (default {DEFAULTS.finish})",
    )
    stylize.add_argument("--colour", choices=COLOUR_MODES, help=f"default {DEFAULTS.colour}")
    stylize.add_argument("--seed", type=int, help=f"default {DEFAULTS.seed}")
    stylize.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    stylize.add_argument(
        "--precision",
        choices=("auto", *PRECISIONS),
        default="auto",
        help="the network's arithmetic; auto (default): bf16 on CPUs with bf16 units, else fp32",
    )
    stylize.add_argument(
        "--quality",
        type=int,
        default=OUTPUT.quality,
        help="quality of a .jpg, .webp, .avif or .heic (1-100)",
    )
    stylize.add_argument(
        "--bit-depth",
        type=int,
        choices=get_args(BitDepth),
        default=OUTPUT.bit_depth,
        help="16: TIFF only",
    )

    check = sub.add_parser("check", help="validate a config file")
    check.add_argument("--config", type=Path, required=True)

    run = sub.add_parser("run", help="run the daemon: watch the inbox, stylize into the outbox")
    run.add_argument("--config", type=Path, required=True)
    run.add_argument("--once", action="store_true", help="process what is there, then exit 0")

    worker = sub.add_parser(
        "worker", help="stylize for a coordinator's queue (queue.url) on this host's devices"
    )
    worker.add_argument("--config", type=Path, required=True)

    notify_test = sub.add_parser(
        "notify-test", help="send a test event to every notify: channel and say how each went"
    )
    notify_test.add_argument("--config", type=Path, required=True)

    status = sub.add_parser("status", help="what the daemon has done and is doing")
    status.add_argument("--config", type=Path, required=True)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `stylebox` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    logger.remove()
    level = "DEBUG" if args.verbose else "INFO"
    # No local variables in a traceback (loguru's diagnose): they hold names and secrets.
    logger.add(sys.stderr, level=level, format=_LOG_FORMAT, backtrace=False, diagnose=False)
    try:
        code = _COMMANDS[args.command](args)
        sys.stdout.flush()  # here, where a reader that has gone is caught, not at exit
        return code
    except StyleboxError as exc:
        print(f"stylebox: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("stylebox: interrupted", file=sys.stderr)
        return ExitCode.FAILURE
    except Exception as exc:  # the one place where anything unexpected becomes exit code 1
        if isinstance(exc, BrokenPipeError) and _stdout_closed():
            return _reader_gone()
        logger.opt(exception=exc).debug("unexpected error")
        print(f"stylebox: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return ExitCode.FAILURE


_LOG_FORMAT = "<green>{time:HH:mm:ss}</green> <level>{level: <7}</level> {message}"


def _reader_gone() -> int:
    """`stylebox status | head -1`: the reader took what it wanted and closed the pipe. The
    command ends quietly with 0, as if its output had been read to the end: the reader's
    choice is no failure, and a pipeline under `set -o pipefail` must not fail or not by
    when the reader left (the SIGPIPE convention, 141, would)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit's flush
    return ExitCode.OK


def _stdout_closed() -> bool:
    """Whether stdout is a pipe or socket whose reader has gone (poll says POLLERR)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError):  # no stdout at all
        return True


def _stylize(args: argparse.Namespace) -> int:
    from daemon import config as config_module
    from daemon import outbox, pipeline
    from daemon.engine.device import Models, resolve_device
    from daemon.media import encode, files

    if bool(args.style) == bool(args.preset):
        raise UsageError(
            "give either --style PAINTING (one or more) or --preset NAME --config FILE"
        )
    if args.preset:
        if args.config is None:
            raise UsageError("--preset needs --config FILE")
        loaded = config_module.load_presets(args.config)
        if args.preset not in loaded.presets:
            known = ", ".join(loaded.presets)
            raise UsageError(f"{args.config}: no preset {args.preset!r} (presets: {known})")
        preset = loaded.presets[args.preset]
        settings, sources, max_pixels = preset.settings, preset.styles, loaded.max_input_pixels
    else:
        settings = DEFAULTS
        sources = tuple(config_module.StyleImage(path, 1 / len(args.style)) for path in args.style)
        max_pixels = files.DEFAULT_MAX_PIXELS
    overrides = {
        name: getattr(args, name)
        for name in ("size", "alpha", "beta", "steps", "finish", "colour", "seed", "single_scale")
        if getattr(args, name) is not None
    }
    _check_overrides(overrides)
    settings = dataclasses.replace(settings, **overrides)
    try:
        check_weights(settings.alpha, settings.beta)
    except ValueError as error:
        raise UsageError(f"--alpha {settings.alpha:g} --beta {settings.beta:g}: {error}") from None
    out_format = encode.format_for_suffix(args.out.suffix)
    if args.bit_depth == 16 and out_format != "tiff":
        raise UsageError(f"{args.out}: --bit-depth 16 needs a .tif output")

    device = resolve_device(args.device)
    models = Models(device, args.precision)
    logger.info(
        "loading VGG-19 ({}) on {}; arithmetic {}: {}",
        settings.weights,
        device,
        models.precision,
        models.precision_reason,
    )
    styles = pipeline.load_styles(sources, settings, max_pixels=max_pixels)
    result, photo = pipeline.stylize_file(
        args.photo,
        styles,
        settings,
        models,
        max_pixels=max_pixels,
        callback=_progress_logger(),
        block=args.block,
    )
    writer = pipeline.image_writer(
        result, photo, format=out_format, quality=args.quality, bit_depth=args.bit_depth
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    outbox.atomic_write(args.out, writer, replace=True)
    h, w = result.image.shape[-2:]
    print(
        f"{args.out}: {w}x{h}, {result.evaluations} evaluations in {result.seconds:.1f} s "
        f"on {result.device}, objective {result.losses.total:.4g} "
        f"(content {result.losses.content:.3g}, style {result.losses.style:.3g})"
        f"{_stages_said(result)}"
    )
    return ExitCode.OK


def _size(text: str) -> int:
    """--size: a number of px, or "full" (the photo's own size)."""
    if text == "full":
        return FULL_SIZE
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of px or full, not {text!r}") from None


def _check_overrides(overrides: dict[str, Any]) -> None:
    """Command-line overrides get the checks of the config file's fields, never restated."""
    for name, value in overrides.items():
        if name == "size" and value == FULL_SIZE:
            value = "full"  # as the file gives it
        field = PresetModel.model_fields[name]
        try:
            TypeAdapter(Annotated[field.annotation, field]).validate_python(value)
        except ValidationError as error:
            raise UsageError(f"--{name} {value}: {error.errors()[0]['msg']}") from None


def _stages_said(result) -> str:
    """The summary line's end: the stages of a coarse-to-fine run, and blocks where any."""
    stages = result.stages
    said = ""
    if len(stages) > 1:
        sides = ", ".join(f"{max(stage.size)}" for stage in stages)
        said += f"; {len(stages)} stages ({sides} px)"
    blocks = max((stage.blocks for stage in stages), default=1)
    if blocks > 1:
        said += f"; {blocks} blocks"
    return said


def _progress_logger():
    """Log a line at most every 5 s (and at the end), so long runs show they are alive: the
    best objective of the stage so far, as the page shows it (a line search's trial may be far
    worse, and is not the picture)."""
    last_time = 0.0

    def report(progress) -> None:
        nonlocal last_time
        now = time.monotonic()
        if now - last_time >= 5 or progress.evaluation == progress.budget:
            last_time = now
            position, best = progress.position, progress.best
            logger.info(
                "{}evaluation {}/{}, best objective {}",
                f"stage {position.stage} of {position.stages}: " if position.stages > 1 else "",
                progress.evaluation,
                progress.budget,
                "none yet" if best is None else f"{best:.4g}",
            )

    return report


def _check(args: argparse.Namespace) -> int:
    from daemon.config import load_config
    from daemon.media import formats

    # The machine checks too (folders, paintings, loguru, Apprise, the secrets), as the
    # daemon's start does.
    loaded = load_config(args.config, check_machine=True)
    print(f"{loaded.path}: ok, presets: {', '.join(loaded.presets)}")
    print(formats.summary())
    # What this machine's device can paint: torch is imported here, not with the config.
    from daemon.engine.device import Models, resolve_device
    from daemon.pipeline import sizes_out_of_reach

    models = Models(resolve_device(loaded.device))
    budget = models.memory_budget_bytes()
    for warning in sizes_out_of_reach(loaded.presets, budget, str(models.device)):
        print(f"warning: {warning}")
    if len(loaded.presets) == 1 and loaded.routing.unmatched == "default":
        print(f"every photo goes to preset {loaded.routing.default_preset}, the only one")
    return ExitCode.OK


def _run(args: argparse.Namespace) -> int:
    from daemon.cluster.serve import stylist_for
    from daemon.service.loop import Service
    from daemon.web.server import serving

    service = Service(
        args.config, once=args.once, verbose=args.verbose, addons=(serving,), stylist=stylist_for
    )
    return service.run()


def _worker(args: argparse.Namespace) -> int:
    from daemon.cluster.serve import run_worker

    return run_worker(args.config, verbose=args.verbose)


def _status(args: argparse.Namespace) -> int:
    from daemon.cluster.status import workers
    from daemon.config import load_config
    from daemon.service.status import read_status

    config = load_config(args.config)
    report = read_status(config, workers=workers(config))
    if args.json:
        print(json.dumps(report, indent=2))
        return ExitCode.OK
    counts = ", ".join(f"{n} {state}" for state, n in report["counts"].items())
    print(f"journal {report['journal']}: {counts}")
    if videos := report["skipped_videos"]:
        print(f"skipped: {videos} video{'s' if videos != 1 else ''} in the inbox (not photos)")
    if report["paused"]:
        print("paused: no new job starts until resumed (web page, or remove state_dir/paused)")
    if report["waiting"]:
        print(f"waiting: {report['waiting']} (work goes on by itself once that is fixed)")
    running = ", ".join(_running_line(job) for job in report["running"])
    print(f"running: {running or 'nothing'}")
    for job in report["queue"]:
        print(f"queued: {job['source']} ({job['preset']})")
    for job in report["recent_failures"]:
        print(f"{job['state']}: {job['source']} ({job['preset']}): {job['error']}")
    for channel in report["events"]:
        line = f"events to {channel['channel']}: {channel['sent']} sent"
        line += f", {channel['pending']} pending, {channel['given_up']} given up"
        if channel["last_error"]:
            line += f" (last try: {channel['last_error']})"
        print(line)
    if report["paintings"] is not None:
        _print_paintings(report["paintings"])
    if report["workers"] is not None:
        _print_workers(report["workers"])
    return ExitCode.OK


def _print_paintings(paintings: dict[str, Any]) -> None:
    """The presets the paintings folder gives, each painting left out and why, what waits."""
    presets = [p["preset"] for p in paintings["found"] if p["state"] == "preset"]
    print(f"paintings in {paintings['folder']}: {', '.join(presets) or 'no preset'}")
    for painting in paintings["found"]:
        if painting["state"] != "preset":
            print(f"painting {painting['file']} {painting['state']}: {painting['reason']}")
    for folder in paintings["waiting"]:
        photos = f"{folder['photos']} photo{'s' if folder['photos'] != 1 else ''}"
        print(f"{photos} in {folder['painting']}/: {folder['reason']}")


def _print_workers(workers: dict[str, Any]) -> None:
    if workers["error"]:
        print(f"workers: {workers['queue']}: {workers['error']}")
    elif not workers["hosts"]:
        print(f"workers: none has reported to {workers['queue']}; start `stylebox worker`")
    for host in workers["hosts"]:
        jobs = ", ".join(f"job {job}" for job in host["jobs"]) or "idle"
        if not host["heard"]:
            state = f"not heard from for {host['quiet_seconds']:.0f} s"
        elif not host["taking_jobs"]:
            state = f"{jobs}; taking no jobs (it cannot see the share)"
        else:
            state = jobs
        print(f"worker {host['name']} ({', '.join(host['devices'])}): {state}")


def _running_line(job: dict[str, Any]) -> str:
    progress = job["progress"]
    line = f"{job['source']} ({job['preset']})"
    if progress is not None:
        if progress.get("stages", 1) > 1:
            line += f" stage {progress['stage']} of {progress['stages']},"
        line += f" evaluation {progress['evaluation']} of at most {progress['budget']}"
        if "worker" in progress:
            line += f" on {progress['worker']}"
    return line


def _notify_test(args: argparse.Namespace) -> int:
    from daemon.config import load_config
    from daemon.service import events
    from daemon.service.channels import channels_for
    from daemon.service.journal import DeliveryState

    config = load_config(args.config, check_machine=True)  # its channels, as the daemon has them
    channels = channels_for(config)
    if not channels:
        print(f"{config.path}: no notify: channels configured")
        return ExitCode.OK
    failures = 0
    for channel in channels:
        outcome = channel.deliver([events.event("test", inbox=str(config.inbox))])
        ok = outcome.state is DeliveryState.SENT
        failures += not ok
        print(f"{channel.label}: {'ok' if ok else 'FAILED'} ({outcome.detail})")
    return ExitCode.FAILURE if failures else ExitCode.OK


_COMMANDS = {
    "stylize": _stylize,
    "check": _check,
    "run": _run,
    "worker": _worker,
    "status": _status,
    "notify-test": _notify_test,
}
