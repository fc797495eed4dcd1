"""The worker loop: claim, generate with the loaded pipeline, post-process, store, settle.

One Worker owns its engines (kept loaded across jobs) and generates one job at a time; a cache hit is
only post-processing (its source's clip re-labelled as its own), with no engine. With
`overlap_post_processing` the finished clip is post-processed (jobs/output.py) in a thread while the
engine starts on the next job; at most one clip is in post-processing at a time. `vidfactory worker`
runs one Worker in its own process; `vidfactory serve` runs `workers_in_process` of them in threads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import numpy as np
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from vidfactory.branding import load_brand
from vidfactory.db.models import Job
from vidfactory.db.outage import Backoff, is_outage
from vidfactory.db.session import SessionFactory
from vidfactory.db.types import utcnow
from vidfactory.engines.base import (Engine, EngineError, GeneratedVideo, GenerationAbandoned,
                                     GenerationCancelled, GenerationRequest, HostedEngine, InvalidInput,
                                     RemoteTaskCallback, StyleAdapter)
from vidfactory.engines.hosted import HostedError, HostedRejected
from vidfactory.engines.memory import (
    MEMORY_MODES,
    free_accelerator_cache,
    mode_that_fits,
    next_memory_mode,
    probe_device,
)
from vidfactory.engines.parallel import DevicePlan
from vidfactory.engines.registry import load_engine
from vidfactory.engines.speed import SpeedSettings
from vidfactory.failures import ErrorType
from vidfactory.jobs import breaker, maintenance, output, queue, training, workers
from vidfactory.jobs.errors import JobTimedOut, LeaseExpired, WorkerStopping, classify
from vidfactory.jobs.lease import Lease, outage_retry_first_s
from vidfactory.jobs.output import ClipIdentity
from vidfactory.media.errors import MediaError
from vidfactory.media.reference import center_crop, decode_rgb
from vidfactory.observability import phases
from vidfactory.safety.frames import FrameClassifier, nsfw_classifier, screen_frames
from vidfactory.settings import ModelConfig, Settings
from vidfactory.storage import Storage, StorageError
from vidfactory.styles.catalog import JobStyle, job_styles

__all__ = ["Worker", "device_report", "new_worker_id", "speed_settings"]

log = logging.getLogger(__name__)

EngineLoader = Callable[[ModelConfig, Path], Engine]
ClassifierLoader = Callable[[], FrameClassifier]
# Progress through a job: denoising 0–80, then the VAE's decode (85 once it returns), the checks, each stage
# of the output pipeline (to 96) and storage (98), so a client watching it never sees it stand still for
# the long tail of a clip (the decode alone is most of a tiny model's time).
generation_share_pct = 80
decoded_progress_pct = 85
checked_progress_pct = 87
rendered_progress_pct = 96
stored_progress_pct = 98
watermark_id_bytes = 4  # the watermark's 32-bit payload
watermark_draws_max = 5
seed_max = 2**31 - 1  # the API's seed range
maintenance_interval_s = 5.0
database_retry_max_s = 5.0  # the serving loop's longest wait for an unreachable database


class _DenoiseClock:
    """Splits a generation's wall time at its last denoising step (the engine's last progress report):
    `denoise` before it, `decode` (the VAE, frames out) after. An engine that never reports the last
    step (a hosted one) has it all counted as `denoise`."""

    def __init__(self, report: Callable[[int, int], None]) -> None:
        self.report = report
        self.started = time.perf_counter()
        self.last_step: float | None = None

    def step(self, done: int, total: int) -> None:
        if done >= total:
            self.last_step = time.perf_counter()
        self.report(done, total)

    def phases(self) -> dict[str, float]:
        ended = time.perf_counter()
        if self.last_step is None:
            return {"denoise": ended - self.started}
        return {"denoise": self.last_step - self.started, "decode": ended - self.last_step}


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def speed_settings(settings: Settings) -> SpeedSettings:
    return SpeedSettings(attention_backend=settings.attention_backend,
                         compile_transformer=settings.compile_transformer, fp8_weights=settings.fp8_weights)


def device_report(settings: Settings, devices: DevicePlan = DevicePlan()) -> workers.DeviceReport:
    """This worker's device (per device, for a worker spanning several); `worker_memory_bytes` overrides the
    detected size (a share of a GPU)."""
    name, total, free = probe_device()
    if settings.worker_memory_bytes is not None:
        total, free = settings.worker_memory_bytes, min(free, settings.worker_memory_bytes)
    return workers.DeviceReport(gpu_name=name, memory_total_bytes=total, memory_free_bytes=free,
                                devices=devices.world_size)


class Worker:
    def __init__(self, settings: Settings, sessions: SessionFactory, storage: Storage, *,
                 worker_id: str | None = None, models: list[str] | None = None,
                 engine_loader: EngineLoader | None = None,
                 classifier_loader: ClassifierLoader = nsfw_classifier,
                 devices: DevicePlan = DevicePlan()) -> None:
        self.settings = settings
        self.sessions = sessions
        self.storage = storage
        self.worker_id = worker_id or new_worker_id()
        self.models = models or [m.id for m in settings.models]
        self.engine_loader = engine_loader or self._load_engine
        self.classifier_loader = classifier_loader
        self.engines: dict[str, Engine] = {}  # resident models, oldest first
        self.devices = devices
        self.device = device_report(settings, devices)
        self.registered = False
        self.last_maintenance = 0.0
        self.last_orphan_scan: float | None = None  # the first maintenance pass scans
        # A probe whose heartbeats stopped for a lease is presumed lost with its worker; another may probe.
        self.breaker_policy = breaker.BreakerPolicy(failures_max=settings.breaker_failures_max,
                                                    cooldown_s=settings.breaker_cooldown_s, probe_s=settings.lease_s)
        self.provenance: output.Provenance | None = None  # loaded on the first clip
        self.post_thread: threading.Thread | None = None  # the clip being post-processed, if any
        self.frame_steps = output.frame_steps(settings)
        self.relabel_steps = output.frame_steps(settings, relabelling=True)
        self.stop: threading.Event | None = None  # set: finish the job in hand, then leave
        self.stop_seen_at: float | None = None

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop`. The job in hand when it is set finishes within `shutdown_grace_s` or is
        handed back (no attempt used). A database outage is waited out with backoff: its leases run out
        and are reaped if it outlasts them, and the loop carries on when it is back."""
        log.info("worker %s serving %s on %s (%.1f GiB)", self.worker_id, ", ".join(self.models),
                 self.device.gpu_name, self.device.memory_total_bytes / 2**30)
        self.stop, self.stop_seen_at = stop, None
        backoff = Backoff(outage_retry_first_s, database_retry_max_s)
        try:
            while not stop.is_set():
                try:
                    self.maintain()
                    worked = self.run_once(wait=False)
                    backoff.reset()
                except SQLAlchemyError as exc:
                    if not is_outage(exc):
                        raise
                    delay = backoff.next_s()
                    log.error("worker %s: database unavailable (retry in %.1f s): %s", self.worker_id, delay, exc)
                    stop.wait(delay)
                    continue
                if not worked:
                    stop.wait(self.settings.poll_s)
        finally:
            self.drain()
            self._deregister()

    def maintain(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last_maintenance < maintenance_interval_s:
            return
        self.last_maintenance = time.monotonic()
        now = utcnow()
        self._report(now)
        maintenance.reap_expired_leases(self.sessions, now)
        maintenance.sweep_expired_holds(self.sessions, now)
        maintenance.expire_vouchers(self.sessions, now)
        maintenance.alert_on_failure_rate(self.sessions, self.settings, now)
        maintenance.decide_overdue_reviews(self.sessions, now)
        maintenance.sweep_expired_content(self.sessions, self.storage, now)
        if self.last_orphan_scan is None or \
                time.monotonic() - self.last_orphan_scan >= self.settings.orphan_scan_interval_s:
            self.last_orphan_scan = time.monotonic()
            maintenance.delete_orphans(self.sessions, self.storage, now, self.settings.orphan_grace_s)

    def _report(self, now: datetime) -> None:
        """Register once, then heartbeat: free memory and the models held now."""
        if self.registered:
            with self.sessions.begin() as session:
                free = probe_device()[2] if self.settings.worker_memory_bytes is None else \
                    self.device.memory_free_bytes
                self.registered = workers.heartbeat(session, self.worker_id, memory_free_bytes=free,
                                                    models_held=list(self.engines), now=now)
        if not self.registered:
            with self.sessions.begin() as session:
                workers.register(session, self.worker_id, self.device, self.models, now)
            self.registered = True

    def _deregister(self) -> None:
        try:
            with self.sessions.begin() as session:
                workers.deregister(session, self.worker_id)
        except SQLAlchemyError as exc:  # going away anyway: admission stops counting it once it is stale
            if not is_outage(exc):
                raise
            log.warning("worker %s: could not deregister: %s", self.worker_id, exc)

    def run_once(self, wait: bool = True) -> bool:
        """Claim and run one job. `wait=False` (the serving loop) returns once the engine is free, leaving
        the clip's post-processing to a thread when overlap is on; `wait=True` returns once it is recorded."""
        if not self.registered:
            self._report(utcnow())
        claimed_at, now = time.monotonic(), utcnow()
        # Jobs record the memory one device needs; one spread over several devices needs less of each, so a
        # multi-device worker is not gated on that figure (admission checked that some worker fits the job).
        memory_gate = None if self.devices.parallel else self.device.memory_total_bytes
        residency = queue.Residency(memory_bytes=memory_gate,
                                    held_models=tuple(m for m in self.models
                                                      if m in self.engines or self.is_hosted(m)),
                                    switch_after_s=self.settings.model_switch_after_s)
        with self.sessions.begin() as session:
            models = self._admitted_models(session, now)
            job = queue.claim(session, worker_id=self.worker_id, models=models, lease_s=self.settings.lease_s,
                              now=now, residency=residency, aging_s=self.settings.queue_aging_s) if models else None
        if job is None:
            return False
        log.info("job %s claimed by %s (attempt %d)", job.id, self.worker_id, job.attempts)
        waited_s = (now - max(job.created_at, job.run_after)).total_seconds()  # queued and eligible to run
        self.execute(job, self._lease(job, claimed_at), wait=wait, waited_s=waited_s)
        return True

    def _lease(self, job: Job, claimed_at: float) -> Lease:
        renew_also = None
        if self.is_hosted(job.model):  # a probe job runs as long as it needs; its breaker stays ours meanwhile
            def renew_also(session: Session, now: datetime) -> None:
                breaker.extend_probe(session, job.model, worker_id=self.worker_id,
                                     until=now + timedelta(seconds=self.breaker_policy.probe_s))
        return Lease(self.sessions, job.id, self.worker_id, lease_s=self.settings.lease_s,
                     heartbeat_s=self.settings.heartbeat_s, claimed_at=claimed_at, renew_also=renew_also)

    def is_hosted(self, model_id: str) -> bool:
        config = self.settings.model(model_id)
        return config is not None and config.is_hosted

    def _admitted_models(self, session: Session, now: datetime) -> list[str]:
        """A hosted model whose breaker is open is not claimed at all: its jobs wait in the queue
        untouched (no attempt used, hold pending) until the breaker lets a probe through."""
        return [model for model in self.models if not self.is_hosted(model)
                or breaker.admits(session, model, worker_id=self.worker_id, now=now, policy=self.breaker_policy)]

    def drain(self) -> None:
        """Wait for the clip in post-processing, if any."""
        if self.post_thread is not None:
            self.post_thread.join()
            self.post_thread = None

    def _load_engine(self, config: ModelConfig, models_dir: Path) -> Engine:
        return load_engine(config, models_dir, speed_settings(self.settings),
                           styles_resident_max=self.settings.styles_resident_max)

    def engine_for(self, model_id: str) -> Engine:
        if model_id not in self.engines:
            self._load(model_id)
        return self.engines[model_id]

    def _load(self, model_id: str) -> float:
        """Load a model, first unloading the oldest ones beyond `models_resident_max`; returns the seconds
        the load took (the model switch cost), also recorded in the worker registry."""
        config = self.settings.model(model_id)
        assert config is not None, f"job for unconfigured model {model_id}"
        # Hosted engines hold no device memory: they neither count nor make room.
        resident = [m for m in self.engines if not self.is_hosted(m)]
        while not config.is_hosted and len(resident) >= self.settings.models_resident_max:
            evicted = resident.pop(0)
            del self.engines[evicted]
            log.info("worker %s unloads %s to load %s", self.worker_id, evicted, model_id)
            free_accelerator_cache()
        started = time.perf_counter()
        self.engines[model_id] = self.engine_loader(config, self.settings.models_dir)
        load_s = time.perf_counter() - started
        try:
            with self.sessions.begin() as session:
                workers.record_load(session, self.worker_id, model_id, load_s)
        except SQLAlchemyError as exc:  # a registry statistic: the job records its own load time
            if not is_outage(exc):
                raise
            log.warning("worker %s: load time of %s not recorded, the database is unreachable", self.worker_id,
                        model_id)
        log.info("worker %s loaded %s in %.2f s", self.worker_id, model_id, load_s)
        return load_s

    def memory_mode_for(self, job: Job) -> str:
        """The fastest mode that fits this device, no faster than what a retry or the settings force."""
        forced = job.memory_mode or (None if self.settings.memory_mode == "auto" else self.settings.memory_mode)
        config = self.settings.model(job.model)
        architecture = None if config is None else config.wan_preset
        if architecture is None:
            return forced or MEMORY_MODES[0]
        fits = mode_that_fits(architecture, job.width, job.height, job.num_frames,
                              self.device.memory_total_bytes, at_least=forced or MEMORY_MODES[0],
                              devices=self.devices.world_size)
        return fits or forced or MEMORY_MODES[-1]

    def execute(self, job: Job, lease: Lease, wait: bool = True, waited_s: float | None = None) -> None:
        """Run one claimed attempt. Invariant: `lease` is released on every way out of here, or by the
        post-processing thread it is passed to, once the outcome is recorded, handed back or given up.
        Each phase's duration is measured on the way (`timings`) and recorded once the clip is delivered."""
        post_processing = False
        timings: dict[str, float] = {} if waited_s is None else {"wait": max(0.0, waited_s)}
        try:
            if job.job_type == "training":
                self._train_or_end(job, lease)
                return
            if job.cache_hit_job_id is not None:
                # A cache hit needs no engine: re-labelling its source's clip is all post-processing.
                post_processing = self._post_process(job, lease, lambda: self._relabel(job, lease, timings), wait)
                return
            video = self._generate_or_end(job, lease, timings)
            if video is None:
                return
            post_processing = self._post_process(job, lease, lambda: self._deliver(job, lease, video, timings),
                                                 wait)
        finally:
            if not post_processing:
                lease.release()

    def _generate_or_end(self, job: Job, lease: Lease, timings: dict[str, float]) -> GeneratedVideo | None:
        """1. Generate: the only step that needs the engine. None when the attempt ended here: recorded
        (failed, requeued, cancelled), handed back, or another worker's now."""
        memory_mode = self.memory_mode_for(job)
        try:
            return self._generate(job, lease, memory_mode, timings)
        except (LeaseExpired, WorkerStopping) as exc:
            self._hand_back(job, lease, exc)
        except GenerationAbandoned as exc:  # nothing to record: the job is another worker's now
            log.warning("job %s: %s; its new owner carries on", job.id, exc)
        except GenerationCancelled:
            self._finish(lease, lambda s: queue.finish_cancelled(s, job.id, self.worker_id), job, "cancelled")
        except Exception as exc:  # every failure is classified, recorded and refunded below
            self._handle_failure(job, lease, exc, memory_mode)
        return None

    def _train_or_end(self, job: Job, lease: Lease) -> None:
        """A style training: the lease, cancellation, hand-back and failure handling of a generation."""
        try:
            self._train(job, lease)
        except (LeaseExpired, WorkerStopping) as exc:
            self._hand_back(job, lease, exc)
        except GenerationAbandoned as exc:
            log.warning("training %s: %s; its new owner resumes it", job.id, exc)
        except GenerationCancelled:
            self._finish(lease, lambda s: queue.finish_cancelled(s, job.id, self.worker_id), job, "cancelled")
        except queue.StaleJob as exc:
            log.warning("training %s moved on before %s recorded it: %s", job.id, self.worker_id, exc)
        except Exception as exc:  # every failure is classified, recorded and refunded below
            self._handle_failure(job, lease, exc)

    def _train(self, job: Job, lease: Lease) -> None:
        # 1. The base model, loaded unless held; the training from its checkpoint, if an attempt left one.
        if job.model not in self.engines:
            self._load(job.model)
        engine, config = self.engines[job.model], self.settings.model(job.model)
        assert config is not None and config.wan_preset is not None, f"training {job.id} for {job.model}"
        run = training.TrainingRun(job, self.storage, lease, self.worker_id, self.settings)
        stop = self._stop_check(lease, time.monotonic() + self.settings.training_timeout_s)
        result, caption = run.train(engine, stop)
        # 2. The adapter, checked as an upload would be, stored; a preview clip made with it.
        style_values = run.store_style(config.wan_preset, result)
        video = run.preview(engine, config.wan_preset, result, caption, stop)
        # 3. The preview through the output pipeline (label, brand, watermark, encode, C2PA), stored.
        brand = lease.transact(lambda session: load_brand(session, job.tenant_id), "reading the brand")
        clip = ClipIdentity(job.id, job.tenant_id, job.watermark_id or self._assign_watermark(job, lease), brand)
        rendition = output.render(video.frames, video.fps, clip, self._provenance(), steps=self.frame_steps)
        assets = output.store(rendition, clip, self.storage)
        # 4. The style ready, the job completed and its hold posted: one transaction.
        lease.conclude(lambda session: queue.complete_training(session, job, self.worker_id, assets, style_values),
                       "the outcome")
        log.info("training %s completed: %d steps, final loss %.4f", job.id, result.steps, result.losses[-1])

    def _post_process(self, job: Job, lease: Lease, deliver: Callable[[], None], wait: bool) -> bool:
        """2. Post-process, one clip at a time: the previous one must be recorded before this one starts.
        With overlap on (and `wait` off) it runs in a thread, leaving the engine free for the next job; True
        then (the thread releases the lease)."""
        self.drain()
        if wait or not self.settings.overlap_post_processing:
            self._record_outcome(job, lease, deliver)
            return False
        self.post_thread = threading.Thread(target=self._record_outcome, args=(job, lease, deliver),
                                            name=f"post-{job.id}", daemon=True)
        self.post_thread.start()
        return True

    def _hand_back(self, job: Job, lease: Lease, exc: GenerationAbandoned) -> None:
        """Back to the queue without using the attempt: the worker is stopping, or the database was lost
        under it. After an outage the lease may have run out, but the compare-and-set still holds while no
        reaper has moved the job: it is tried through the outage for one more lease, then left to the reaper."""
        lease.release()
        error_type = ErrorType.worker_lost if isinstance(exc, WorkerStopping) else ErrorType.database_error
        backoff = Backoff(outage_retry_first_s, database_retry_max_s)
        deadline = time.monotonic() + self.settings.lease_s
        while True:
            try:
                with self.sessions.begin() as session:
                    queue.hand_back(session, job.id, owner=self.worker_id, error_type=error_type, message=str(exc))
                log.warning("job %s handed back by %s: %s", job.id, self.worker_id, exc)
                return
            except queue.StaleJob:
                log.warning("job %s moved on before %s could hand it back", job.id, self.worker_id)
                return
            except SQLAlchemyError as db_exc:
                delay = backoff.next_s()
                if not is_outage(db_exc):
                    raise
                if time.monotonic() + delay > deadline:
                    log.error("job %s: could not hand it back, the database is unreachable; the reaper will "
                              "requeue it", job.id)
                    return
                time.sleep(delay)  # backing off: nothing else to do for this job meanwhile

    def _generate(self, job: Job, lease: Lease, memory_mode: str, timings: dict[str, float]) -> GeneratedVideo:
        # 1. The model, loaded unless this worker holds it already (a switch: its cost is recorded).
        load_s = None if job.model in self.engines else self._load(job.model)
        if load_s is not None:
            timings["model_load"] = load_s
        config = self.settings.model(job.model)
        step_cache_allowed = bool((job.engine_settings or {}).get("step_cache_allowed"))
        # 2. Generate, reporting progress and stopping at the next step when told to.
        request = GenerationRequest(
            prompt=job.prompt, negative_prompt=job.negative_prompt, width=job.width, height=job.height,
            num_frames=job.num_frames, fps=job.fps, num_inference_steps=job.steps,
            guidance_scale=job.guidance_scale, seed=job.seed,
            guidance_scale_2=None if config is None else config.guidance_scale_2,
            image=self._reference_frame(job), memory_mode=memory_mode,
            step_cache=self.settings.step_cache if step_cache_allowed else "none",
            resume_task_id=self._remote_task_of(job), adapters=self._adapters(job))
        deadline = time.monotonic() + self.settings.job_timeout_s
        clock = _DenoiseClock(self._progress_reporter(lease))
        stop = self._stop_check(lease, deadline)
        if self.is_hosted(job.model):  # its remote task is recorded at once, for a retry to resume
            hosted = cast(HostedEngine, self.engines[job.model])
            video = hosted.generate(request, clock.step, stop, on_remote_task=self._task_recorder(job, lease))
        else:
            video = self.engines[job.model].generate(request, clock.step, stop)
        timings.update(clock.phases())
        self._set_progress(lease, decoded_progress_pct)
        # 3. What it ran with, and the model load it paid.
        applied = {"memory_mode": memory_mode, "step_cache": request.step_cache, **video.engine_settings}
        if request.adapters:
            applied["styles"] = [{"sha256": a.sha256, "scale": a.scale} for a in request.adapters]
        lease.transact(lambda session: queue.record_run(session, job.id, self.worker_id, engine_settings=applied,
                                                        model_load_s=load_s), "the run's settings")
        return video

    def _adapters(self, job: Job) -> tuple[StyleAdapter, ...]:
        """The job's styles; each adapter's bytes are read from storage only if the engine lacks it."""
        styles = job_styles(job)
        if styles and self.is_hosted(job.model):
            raise InvalidInput(f"{job.model} is a hosted model: styles apply to local Wan models only")
        return tuple(StyleAdapter(sha256=style.sha256, scale=style.scale, read=self._adapter_reader(style))
                     for style in styles)

    def _adapter_reader(self, style: JobStyle) -> Callable[[], bytes]:
        def read() -> bytes:
            data = self.storage.read(style.key)
            if hashlib.sha256(data).hexdigest() != style.sha256:
                raise StorageError(f"the stored adapter of style {style.name} does not match its SHA-256")
            return data

        return read

    def _remote_task_of(self, job: Job) -> str | None:
        """The remote task an earlier attempt recorded, if it was made by the engine the model uses now."""
        config = self.settings.model(job.model)
        recorded = job.engine_metadata or {}
        if config is None or not config.is_hosted or recorded.get("engine") != config.engine:
            return None
        task_id = recorded.get("task_id")
        return task_id if isinstance(task_id, str) else None

    def _task_recorder(self, job: Job, lease: Lease) -> RemoteTaskCallback:
        config = self.settings.model(job.model)
        assert config is not None and config.is_hosted

        def record(task_id: str) -> None:  # StaleJob when the job is another's: the engine cancels the task
            lease.transact(lambda session: queue.record_remote_task(session, job.id, self.worker_id,
                                                                    engine=config.engine, task_id=task_id),
                           "the remote task")
            log.info("job %s: remote task %s recorded", job.id, task_id)

        return record

    def _reference_frame(self, job: Job) -> np.ndarray | None:
        """The job's reference image as RGB, cropped to the clip's aspect ratio (the engine resizes it)."""
        if job.reference_key is None:
            return None
        data = self.storage.read(job.reference_key)
        if hashlib.sha256(data).hexdigest() != job.reference_sha256:
            raise MediaError(f"the stored reference image {job.reference_key} does not match its SHA-256")
        return center_crop(decode_rgb(data), job.width, job.height)

    def _record_outcome(self, job: Job, lease: Lease, deliver: Callable[[], None]) -> None:
        try:
            deliver()
        except LeaseExpired as exc:
            self._hand_back(job, lease, exc)
        except queue.StaleJob as exc:  # reaped meanwhile, or a dropped commit that had in fact landed
            log.warning("job %s moved on before %s recorded it: %s", job.id, self.worker_id, exc)
        except Exception as exc:  # every failure is classified, recorded and refunded below
            self._handle_failure(job, lease, exc)
        finally:
            lease.release()

    def _deliver(self, job: Job, lease: Lease, video: GeneratedVideo, timings: dict[str, float]) -> None:
        started = time.perf_counter()
        # 1. Stop here if the job was cancelled, or its lease lost, while it generated.
        if self._stopped_meanwhile(job, lease):
            return
        # 2. Quality checks: a failed clip is generated again once, with a new seed, then it fails.
        report = output.check_quality(video.frames, self.settings)
        record = {**report.to_dict(), "seed": job.seed, "earlier": job.qc_report}
        if report.verdict == "fail":
            self._quality_failed(job, lease, record, output.qc_summary(report))
            return
        # 3. Screen sampled frames of what the engine made. A clip flagged here or by QC is stored but
        #    waits for an admin, held once with every reason.
        qc_review = queue.Review("qc", output.qc_summary(report)) if report.verdict == "flag" else None
        reviews = [review for review in (self._screen_output(video.frames), qc_review) if review is not None]
        # 4. Name the clip: the watermark payload that will identify this job, and the tenant's brand.
        brand = lease.transact(lambda session: load_brand(session, job.tenant_id), "reading the brand")
        clip = ClipIdentity(job.id, job.tenant_id, job.watermark_id or self._assign_watermark(job, lease), brand)
        # 5. Render every file (label, brand, watermark, encode, metadata, C2PA, previews, hashes), then store.
        self._set_progress(lease, checked_progress_pct)
        rendition = output.render(video.frames, video.fps, clip, self._provenance(), steps=self.frame_steps,
                                  on_stage=self._stage_reporter(lease))
        self._set_progress(lease, stored_progress_pct)
        timings["postprocess"] = time.perf_counter() - started
        assets = self._upload(rendition, clip, timings)

        # 6. Deliver and settle, or hold for review: one transaction either way.
        def settle(session: Session) -> None:
            self._record_engine_run(session, job, video)
            queue.record_qc(session, job.id, self.worker_id, record)
            if reviews:
                self._hold_for_review(session, job, assets, reviews)
            else:
                queue.complete(session, job, self.worker_id, assets, charge=job.total_tokens)

        lease.conclude(settle, "the outcome")
        log.info("job %s %s: %d frames, %d bytes, %d tokens; %s", job.id,
                 "held for review" if reviews else "completed", len(video.frames), assets[0].size_bytes,
                 job.total_tokens, ", ".join(f"{name} {s:.2f} s" for name, s in rendition.stage_s.items()))
        self._record_phases(job, timings)

    def _upload(self, rendition: output.Rendition, clip: ClipIdentity,
                timings: dict[str, float]) -> list[queue.AssetRecord]:
        started = time.perf_counter()
        assets = output.store(rendition, clip, self.storage)
        timings["upload"] = time.perf_counter() - started
        return assets

    def _record_phases(self, job: Job, timings: dict[str, float]) -> None:
        """A delivered job's phase durations: a JSON log line each, and the fleet's histograms (`/metrics`),
        in a transaction of their own: a statistic never holds up or undoes a delivery."""
        phases.log_phases(job.id, job.model, self.worker_id, timings)
        try:
            with self.sessions.begin() as session:
                phases.observe(session, job.model, timings)
        except SQLAlchemyError as exc:
            if not is_outage(exc):
                raise
            log.warning("job %s: phase durations not recorded, the database is unreachable", job.id)

    def _relabel(self, job: Job, lease: Lease, timings: dict[str, float]) -> None:
        """A cache hit: the source's delivered clip, decoded and rendered again as this job's own (its
        watermark, AIGC ProduceID and C2PA manifest name this job), posted at the cache rate. The label and
        brand are in the source's pixels already, and its quality checks and screening passed."""
        started = time.perf_counter()
        # 1. Stop here if the job was cancelled, or its lease lost, while it waited.
        if self._stopped_meanwhile(job, lease):
            return
        # 2. The source's clip; when it was deleted meanwhile, the job is generated like a miss instead.
        source = self._source_clip(job, lease)
        if source is None:
            self._finish(lease, lambda s: queue.forget_cache_hit(s, job.id, owner=self.worker_id), job,
                         f"requeued to generate: its cached source {job.cache_hit_job_id} is gone")
            return
        frames = output.delivered_frames(source)
        # 3. Render every file under this job's identity, store, deliver and settle.
        clip = ClipIdentity(job.id, job.tenant_id, job.watermark_id or self._assign_watermark(job, lease))
        rendition = output.render(frames, job.fps, clip, self._provenance(), steps=self.relabel_steps,
                                  on_stage=self._stage_reporter(lease))
        self._set_progress(lease, stored_progress_pct)
        timings["postprocess"] = time.perf_counter() - started
        assets = self._upload(rendition, clip, timings)
        charge = lease.conclude(lambda session: queue.complete_cache_hit(session, job, self.worker_id, assets),
                                "the outcome")
        log.info("job %s completed from the cache (%s): %d bytes, %d tokens; %s", job.id, job.cache_hit_job_id,
                 assets[0].size_bytes, charge, ", ".join(f"{name} {s:.2f} s" for name, s in rendition.stage_s.items()))
        self._record_phases(job, timings)

    def _source_clip(self, job: Job, lease: Lease) -> bytes | None:
        """The bytes of the video a cache hit copies, or None when it was deleted since the hit."""
        source_id = job.cache_hit_job_id
        assert source_id is not None
        key = lease.transact(lambda session: queue.delivered_video_key(session, source_id), "the cached source")
        if key is None:
            return None
        try:
            return self.storage.read(key)
        except FileNotFoundError:  # deleted between the query and the read
            return None

    def _record_engine_run(self, session: Session, job: Job, video: GeneratedVideo) -> None:
        """What the engine reported about the run; a hosted service that delivered closes its breaker."""
        if video.metadata:
            queue.record_engine_metadata(session, job.id, self.worker_id, video.metadata)
        if self.is_hosted(job.model):
            breaker.record_success(session, job.model)

    def _quality_failed(self, job: Job, lease: Lease, record: dict, summary: str) -> None:
        if job.qc_report is None:  # the first failure: one more try with another seed
            seed = (job.seed + 1 + secrets.randbelow(seed_max)) % (seed_max + 1)
            self._finish(lease, lambda s: queue.regenerate_for_qc(s, job.id, owner=self.worker_id, seed=seed,
                                                           report=record, run_after=utcnow()),
                         job, f"regenerated with seed {seed} after failing QC ({summary})")
            return

        def fail(session) -> None:
            queue.record_qc(session, job.id, self.worker_id, record)
            queue.fail(session, job.id, expected=("in_progress",), owner=self.worker_id, error_type=ErrorType.qc_failed,
                       message=f"the clip failed its quality checks twice: {summary}")

        self._finish(lease, fail, job, "failed QC twice")

    def _hold_for_review(self, session, job: Job, assets: list[queue.AssetRecord],
                         reviews: list[queue.Review]) -> None:
        """One hold, whatever raised it; every reason is kept for the admin (and in its alert)."""
        reason = "; ".join(f"{review.source}: {review.reason}" for review in reviews)
        queue.hold_for_review(session, job, self.worker_id, assets, queue.Review(reviews[0].source, reason))

    def _stopped_meanwhile(self, job: Job, lease: Lease) -> bool:
        if lease.lost.is_set():
            log.warning("job %s: lease lost before delivery; the new owner decides", job.id)
            return True
        stop = lease.transact(lambda session: queue.should_stop(session, job.id, self.worker_id), "the stop check")
        if stop:
            self._finish(lease, lambda s: queue.finish_cancelled(s, job.id, self.worker_id), job, "cancelled")
        return stop

    def _assign_watermark(self, job: Job, lease: Lease) -> str:
        for _ in range(watermark_draws_max):
            watermark_id = secrets.token_hex(watermark_id_bytes)
            try:
                lease.transact(lambda session: queue.assign_watermark(session, job.id, self.worker_id, watermark_id),
                               "the watermark id")
                return watermark_id
            except IntegrityError:
                log.warning("job %s: watermark id %s already taken; drawing another", job.id, watermark_id)
        raise MediaError(f"no free watermark id after {watermark_draws_max} draws")

    def _provenance(self) -> output.Provenance:
        if self.provenance is None:
            self.provenance = output.load_provenance(self.settings)
        return self.provenance

    def _screen_output(self, frames) -> queue.Review | None:
        """The one review a finished clip can carry. A check added later (QC) joins its reason into this
        Review, so a clip is held once, with every reason."""
        if not self.settings.output_screening_enabled:
            return None
        verdict = screen_frames(frames, self.classifier_loader(), threshold=self.settings.output_nsfw_threshold,
                                samples=self.settings.output_frames_sampled)
        if not verdict.flagged:
            return None
        return queue.Review("output_safety", f"frame {verdict.frame} scored {verdict.score:.3f} on open_nsfw "
                                             f"(threshold {self.settings.output_nsfw_threshold:.2f}, "
                                             f"{verdict.sampled} frames sampled)")

    def _progress_reporter(self, lease: Lease) -> Callable[[int, int], None]:
        last_write = 0.0

        def report(done: int, total: int) -> None:
            nonlocal last_write
            now = time.monotonic()
            if done < total and now - last_write < self.settings.progress_write_interval_s:
                return
            last_write = now
            self._set_progress(lease, generation_share_pct * done // max(total, 1))

        return report

    def _stage_reporter(self, lease: Lease) -> Callable[[int, int], None]:
        span = rendered_progress_pct - checked_progress_pct

        def report(done: int, total: int) -> None:
            self._set_progress(lease, checked_progress_pct + span * done // max(total, 1))

        return report

    def _set_progress(self, lease: Lease, progress: int) -> None:
        lease.best_effort(lambda session: queue.report_progress(session, lease.job_id, self.worker_id, progress),
                          "progress")

    def _stop_check(self, lease: Lease, deadline: float) -> Callable[[], bool]:
        """Between steps: the job's deadline, the lease (lost: stop, nothing more is written), the worker
        stopping past its grace, then the database's word (unreachable: carry on while the lease holds)."""
        def is_cancelled() -> bool:
            if time.monotonic() > deadline:
                raise JobTimedOut(f"generation exceeded {self.settings.job_timeout_s:.0f} s")
            if lease.lost.is_set():
                raise LeaseExpired(f"the lease of {self.worker_id} ran out or was taken")
            if self._grace_over():
                raise WorkerStopping(f"worker {self.worker_id} is stopping and the job outran its "
                                     f"{self.settings.shutdown_grace_s:g} s grace")
            reason = lease.best_effort(lambda session: queue.stop_reason(session, lease.job_id, self.worker_id),
                                       "stop check")
            if reason == "taken_over":
                raise GenerationAbandoned(f"lease lost by {self.worker_id}")
            return reason is not None

        return is_cancelled

    def _grace_over(self) -> bool:
        """True once the worker was told to stop at least `shutdown_grace_s` ago (counted from the first
        step that saw it)."""
        if self.stop is None or not self.stop.is_set():
            return False
        if self.stop_seen_at is None:
            self.stop_seen_at = time.monotonic()
        return time.monotonic() - self.stop_seen_at >= self.settings.shutdown_grace_s

    def _handle_failure(self, job: Job, lease: Lease, exc: Exception, memory_mode: str | None = None) -> None:
        """`memory_mode`: the mode a failed generation ran in (None after it, in post-processing)."""
        verdict = classify(exc)
        message = f"{type(exc).__name__}: {exc}"
        log.error("job %s attempt %d failed (%s): %s", job.id, job.attempts, verdict.error_type, message,
                  exc_info=verdict.error_type == ErrorType.internal_error)
        metadata = exc.metadata if isinstance(exc, HostedError) else None
        try:
            breaker_open = self._update_breaker(job.model, lease, exc, message)
        except LeaseExpired as lost:
            log.error("job %s: failure not recorded: %s; the reaper requeues it", job.id, lost)
            return
        if verdict.error_type == ErrorType.oom and memory_mode is not None:
            self._retry_out_of_memory(job, lease, memory_mode, message)
        elif verdict.transient and breaker_open:
            self._finish(lease, lambda s: queue.hand_back(s, job.id, owner=self.worker_id,
                                                          error_type=verdict.error_type, message=message),
                         job, "handed back: breaker open", metadata)
        elif verdict.transient and job.attempts < job.attempts_max:
            backoff = self.settings.retry_backoff_s * 2 ** (job.attempts - 1)
            run_after = utcnow() + timedelta(seconds=backoff)
            self._finish(lease, lambda s: queue.requeue(s, job.id, owner=self.worker_id, run_after=run_after,
                                                        error_type=verdict.error_type, message=message),
                         job, "requeued", metadata)
        else:
            self._finish(lease, lambda s: queue.fail(s, job.id, expected=("in_progress",), owner=self.worker_id,
                                                     error_type=verdict.error_type, message=message),
                         job, "failed", metadata)

    def _retry_out_of_memory(self, job: Job, lease: Lease, memory_mode: str, message: str) -> None:
        """Once, at once, with the next more frugal memory mode; a second out-of-memory fails the job."""
        retry_mode = next_memory_mode(memory_mode)
        if job.memory_mode is None and retry_mode is not None:
            self._finish(lease, lambda s: queue.requeue(s, job.id, owner=self.worker_id, run_after=utcnow(),
                                                        error_type=ErrorType.oom, message=message,
                                                        memory_mode=retry_mode),
                         job, f"requeued with memory mode {retry_mode}")
        else:
            self._finish(lease, lambda s: queue.fail(s, job.id, expected=("in_progress",), owner=self.worker_id,
                                                     error_type=ErrorType.oom, message=message), job, "failed")

    def _update_breaker(self, model_id: str, lease: Lease, exc: Exception, message: str) -> bool:
        """Count a hosted service's failure; True when its breaker is open. A request the service refused
        (invalid input) proves it answers; local refusals, cancellations and our own faults say nothing."""
        if not self.is_hosted(model_id):
            return False
        if isinstance(exc, HostedRejected):
            lease.transact(lambda session: breaker.record_success(session, model_id), "the breaker")
            return False
        if not isinstance(exc, EngineError) or isinstance(exc, (InvalidInput, GenerationCancelled)):
            return False
        return lease.transact(lambda session: breaker.record_failure(session, model_id, message, now=utcnow(),
                                                                     policy=self.breaker_policy), "the breaker")

    def _finish(self, lease: Lease, change: Callable[[Session], object], job: Job, outcome: str,
                metadata: dict | None = None) -> None:
        """Record how the attempt ended, retried through a database outage while the lease holds. Not
        recorded (the lease ran out, or the job moved on): the job is the reaper's or its new owner's."""
        def record(session: Session) -> None:
            if metadata:
                queue.record_engine_metadata(session, job.id, self.worker_id, metadata)
            change(session)

        try:
            lease.conclude(record, outcome)
            log.info("job %s %s", job.id, outcome)
        except (queue.StaleJob, LeaseExpired) as exc:
            log.warning("job %s: could not record %s: %s", job.id, outcome, exc)
