"""The executor: the one place a job is painted and published, for the local worker and for each
worker host alike.

It owns one device's models and the style targets made on it, and for a batch of loaded photos
of one preset and output size: paints them together, falls back to one photo at a time when the
batch fails (one photo's fault must not cost its mates an attempt) or does not fit the device,
publishes each result atomically inside the outbox (temp name, fsync, rename) unless the same
bytes' result is there already (a job delivered twice), and returns one typed `Ended` per job.
A stop abandons the batch at its next evaluation (RELEASED); a device that cannot be used again
ends every job not yet done as DEVICE_LOST and leaves `poisoned` set for the driver to exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from loguru import logger

from daemon import pipeline
from daemon.config import Preset
from daemon.engine import device, transfer
from daemon.errors import InputError
from daemon.jobs.outcome import (
    Outcome,
    StopRequested,
    Superseded,
    check_photo,
    classify,
    holds,
)
from daemon.jobs.progress import JobProgress
from daemon.jobs.sidecar import sidecar_for
from daemon.jobs.work import Ended, Loaded, Snapshot, Work, Writing
from daemon.media import decode
from daemon.outbox import Delivery, Outbox, atomic_write, published

Models = device.Models  # one device's networks: the drivers make them and hand them over
OnProgress = Callable[[Snapshot], None]
StyleKey = tuple[str, int, str, str]  # preset fingerprint, long side, device, precision


def header_output_size(source: Path, preset: Preset, max_pixels: int) -> tuple[int, int] | None:
    """The output size a queued photo's header promises, None when it cannot be read (the job
    is sorted out on its own turn): what batch-mates are matched by."""
    try:
        shape = decode.pixel_shape(source, max_pixels=max_pixels, long_side=preset.settings.size)
    except (InputError, OSError):
        return None
    return transfer.output_size(*shape, preset.settings)


@dataclass(frozen=True)
class Painting:
    """What a batch is painted with and where its results go: the same for each of its photos."""

    preset: Preset
    writing: Writing
    outbox: Outbox
    max_pixels: int  # bounds the style images as it bounds the photos
    on_progress: OnProgress | None = None


@dataclass(eq=False)
class Executor:
    """One device's painter; not shared between threads (a worker host makes one per device).
    `worker`: who paints, for the sidecars; `stopping`: asked at every evaluation."""

    models: Models
    worker: dict[str, Any]
    stopping: Callable[[], bool] = lambda: False
    clock: Callable[[], float] = time.time
    # set once the device cannot be used again
    poisoned: BaseException | None = field(default=None, init=False)
    _styles: dict[StyleKey, tuple[list[transfer.Style], transfer.StyleTargets]] = field(
        default_factory=dict, init=False
    )

    @property
    def device(self) -> str:
        """The device this executor paints on, as logs and the roster name it."""
        return str(self.models.device)

    def warm_up(self, preset: Preset, max_pixels: int) -> None:
        """Load the model and this preset's styles before the first job asks for them."""
        self.models.for_settings(preset.settings)
        self._styles_for(preset, max_pixels)

    def load(self, work: Work, preset: Preset, max_pixels: int) -> Loaded:
        """The job's photo, checked (still the bytes queued, a regular file) and decoded at the
        preset's size; raises what `classify` sorts."""
        check_photo(work.source, work.content_hash)
        photo = pipeline.load_photo(
            work.source, preset.settings, max_pixels=max_pixels, follow_symlinks=False
        )
        # Pillow may decode a file whose tail is still zeros (a copy that stalled, which the
        # watcher gave up waiting for): painting it would make a result of half a photo.
        if not decode.is_whole(work.source, max_pixels=max_pixels):
            raise InputError(
                f"{work.source.name}: it ends before its format does (cut short, or its copy "
                "stalled); dropped again whole, it is painted"
            )
        return Loaded(work, photo, transfer.output_size(*photo.pixels.shape[:2], preset.settings))

    def room(self, size: tuple[int, int]) -> int:
        """How many photos with results of this size the device holds in one batch."""
        return pipeline.room_for(size, self.models)

    def failed(self, work: Work, exc: Exception) -> Ended:
        """The ending of a job whose step raised `exc` (outside the engine's run too, e.g. while
        it was loaded), logged as such: the broad catch lives only at the job's edge."""
        log = logger.bind(job=work.job_id)
        if device.is_poisoned(exc):
            self.poisoned = self.poisoned or exc
            return Ended(work, Outcome.DEVICE_LOST, f"device error: {exc}")
        outcome, reason = classify(exc, work.source.name)
        if device.is_out_of_memory(exc):
            device.release_cached_memory()  # give the next attempt the memory this one held
        if outcome is Outcome.FAILED:
            log.opt(exception=exc).error("unexpected error")
        return Ended(work, outcome, reason)

    def paint(self, batch: Sequence[Loaded], painting: Painting) -> list[Ended]:
        """Paint `batch` (one preset, one output size) together and publish each result; a
        batch that fails or does not fit is painted again one photo at a time."""
        if self.poisoned is not None:
            return [self._lost(each.work) for each in batch]
        if len(batch) > 1 and len(batch) > self.room(batch[0].size):
            logger.warning(
                "{} photos at {} do not fit on {}; each photo runs alone",
                len(batch),
                batch[0].size,
                self.device,
            )
            return self._one_by_one(batch, painting)
        self._announce(batch, painting.preset)
        try:
            results = self._stylize(batch, painting)
        except StopRequested:
            for each in batch:
                logger.bind(job=each.work.job_id).info(
                    "stopped mid-job; it will run again at the next start"
                )
            return [Ended(each.work, Outcome.RELEASED, "the worker stopped") for each in batch]
        except Exception as exc:
            if len(batch) == 1 or device.is_poisoned(exc):
                if device.is_poisoned(exc):
                    logger.critical("the device {} is unusable: {}", self.device, exc)
                return [self.failed(each.work, exc) for each in batch]
            # Not one photo's failure until one fails alone: an out-of-memory, or a photo
            # the engine cannot take, must not cost its batch-mates an attempt.
            logger.warning("a batch of {} failed ({}); each photo runs alone", len(batch), exc)
            return self._one_by_one(batch, painting)
        ended = []
        for each, result in zip(batch, results, strict=True):
            publish = partial(self._publish, each, result, painting, len(batch))
            ended.append(self._guarded(each.work, publish))
        return ended

    def _one_by_one(self, batch: Sequence[Loaded], painting: Painting) -> list[Ended]:
        return [ended for each in batch for ended in self.paint([each], painting)]

    def _lost(self, work: Work) -> Ended:
        return Ended(work, Outcome.DEVICE_LOST, f"device error: {self.poisoned}")

    def _guarded(self, work: Work, step: Callable[[], Ended]) -> Ended:
        try:
            return step()
        except Exception as exc:
            return self.failed(work, exc)

    def _announce(self, batch: Sequence[Loaded], preset: Preset) -> None:
        together = f" in a batch of {len(batch)}" if len(batch) > 1 else ""
        for each in batch:
            logger.bind(job=each.work.job_id).info(
                "{} -> preset {} (attempt {}){} on {}",
                each.work.source,
                preset.name,
                each.work.attempt,
                together,
                self.device,
            )

    def _stylize(self, batch: Sequence[Loaded], painting: Painting) -> list[transfer.Result]:
        preset, on_progress = painting.preset, painting.on_progress
        styles, targets = self._styles_for(preset, painting.max_pixels)
        started = time.monotonic()

        def evaluated(progress: transfer.Progress) -> None:
            if self.stopping():
                raise StopRequested
            if on_progress is None:
                return
            position = progress.position
            line = JobProgress(
                progress.evaluation,
                progress.budget,
                progress.best,
                time.monotonic() - started,
                self.clock(),
                stage=position.stage,
                stages=position.stages,
                stage_seconds=progress.stage_seconds,
                later_evaluations=position.later_evaluations,
            )
            preview = partial(_write_preview, progress=progress)
            on_progress(Snapshot(batch[progress.item].work, line, preview))

        return pipeline.stylize_photos(
            [(each.work.source.name, each.photo) for each in batch],
            styles,
            preset.settings,
            self.models,
            targets=targets,
            callback=evaluated,
        )

    def _publish(
        self, loaded: Loaded, result: transfer.Result, painting: Painting, batch: int
    ) -> Ended:
        """The result and its sidecar into the outbox, where the job was planned."""
        work = loaded.work
        planned = work.planned
        already = published(planned, work.content_hash)
        if already is not None:  # delivered twice: the other painting was published first
            logger.bind(job=work.job_id).info("published meanwhile by another worker; ours dropped")
            delivery = Delivery(image=planned, sidecar=planned.with_suffix(".json"))
            return Ended(work, Outcome.DONE, delivery=delivery, sidecar=already)
        if work.source.exists() and not holds(work.source, work.content_hash):
            # Replaced mid-job: its owner wants the new content, which is a job of its own; a
            # result for the old one would be a second output under one name. (Deleted mid-job:
            # the photo was whole when the job began, so its result is kept.)
            raise Superseded(f"{work.source.name} changed while it was stylised")
        writing = painting.writing
        writer = pipeline.image_writer(
            result,
            loaded.photo,
            format=writing.format,
            quality=writing.quality,
            bit_depth=writing.bit_depth,
            preset=painting.preset.name,
            strip_location=writing.strip_location,
        )
        sidecar = sidecar_for(loaded, painting.preset, result, batch, self.clock(), self.worker)
        delivery = painting.outbox.deliver(planned, writer, sidecar)
        return Ended(work, Outcome.DONE, delivery=delivery, sidecar=sidecar)

    def _styles_for(
        self, preset: Preset, max_pixels: int
    ) -> tuple[list[transfer.Style], transfer.StyleTargets]:
        """Style images and their Gram targets, loaded once per preset version on this device:
        keyed by all that makes them (the fingerprint holds the styles and the settings)."""
        key: StyleKey = (
            preset.fingerprint,
            preset.settings.size,
            self.device,
            self.models.precision,
        )
        if key not in self._styles:
            styles = pipeline.load_styles(preset.styles, preset.settings, max_pixels=max_pixels)
            self._styles[key] = (styles, transfer.StyleTargets())
        return self._styles[key]


def _write_preview(path: Path, *, progress: transfer.Progress) -> None:
    """The photo as painted so far, atomically (the page never reads half a file)."""
    path.parent.mkdir(exist_ok=True)
    atomic_write(path, pipeline.preview_writer(progress), replace=True)
