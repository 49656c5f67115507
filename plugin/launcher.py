"""Starting training: `launch()` creates the MLflow run and starts its worker process.

Training runs in its own process by default, so a crash never takes the caller down; the
returned `TrainingHandle` follows the run through MLflow (status, progress, stop, wait).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activelab import keys
from activelab.backend import DEFAULT_BACKEND, Backend, Job, end_mark, record_process
from activelab.config import apply_overrides, validate_config
from activelab.errors import InvalidConfigError, TrainingError
from activelab.run_note import NOTE_TAG, RunNote
from activelab.runs import (
    ACTIVE,
    RunSummary,
    dead_reason,
    get_run,
    mark_failed,
    read_checkpoint,
    request_stop,
    resolve_checkpoint,
    settle_dead_run,
    trainer_process_ended,
)
from activelab.version import __version__
from activelab.worker import LaunchSpec, execute_run

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Callable

    from activelab.config import ModelConfig
    from activelab.models import Model
    from activelab.runtime import Progress

MAX_PARAM_LENGTH = 6000  # MLflow's limit of a param value
# a wait for follow-ups with no timeout of its own ends here (a trainer elsewhere that died
# after its run's end never says they are done)
FOLLOW_UPS_WAIT_S = 900
# wait() on a run of this machine: how often it looks for the end mark, and reads the run
MARK_POLL_S = 0.02
READ_EVERY_S = 1.0
IN_PROCESS_RUN_THREAD = "activelab-run-"  # its name's start


def _run_name(model: Model, number: int, epochs: int, parent_number: str | None) -> str:
    name = f"{model.name} #{number} · {epochs} epoch{'s' if epochs != 1 else ''}"
    return f"{name} from #{parent_number}" if parent_number else name


def launch(
    model: Model,
    epochs: int | None = None,
    resume_from: str | None = None,
    config: dict[str, Any] | None = None,
    run_name: str | None = None,
    wait: bool = False,
    progress: bool = False,
    in_process: bool = False,
    system_metrics: bool = True,
    on_progress: Callable[[Progress], None] | None = None,
    backend: str = DEFAULT_BACKEND,
    address: str | None = None,
    cpus: float | None = None,
    gpus: float | None = None,
    backend_options: dict[str, Any] | None = None,
) -> TrainingHandle:
    """Start a training run of `model` and return its handle.

    epochs: epochs to train (default: the trainer's `epochs` setting; the built-in trainer's
        default of 0 picks enough epochs for the data set's size).
    resume_from: continue from a checkpoint: "RUN_ID" (its latest), "RUN_ID:epoch-0005.pt"
        or "runs:/RUN_ID/checkpoints/epoch-0005.pt". The new run is a child of that run.
    config: dotted overrides for this run only (e.g. {"lr": 1e-4}); the model keeps its own.
    wait: block until the run ends (`progress=True` draws a progress bar).
    in_process: train in a thread of this process (notebooks, benchmarks, debugging) instead
        of a child process; it sets MLflow's global tracking URI.
    on_progress: with `in_process`, called after every step with the run's Progress.
    backend: where the worker runs: "local" (a process on this machine, the default), "ray"
        (a job on the Ray cluster at `address`), or a plugin's backend (`activelab plugins`).
    address: the backend's address, e.g. Ray's dashboard "http://HEAD:8265" (default for
        ray: $RAY_ADDRESS).
    cpus, gpus: what the run asks its backend for (ray: the job's resources; default 1 CPU
        and no GPU).
    backend_options: any other option the backend declares (`activelab plugins show ray`).
    """
    lab = model.lab
    tracking = lab.tracking
    host = lab.plugins
    model.refresh()
    model._require_active("train")
    cfg = apply_overrides(model.config, config, host) if config else model.config
    validate_config(cfg, host, model.dataset_info)
    parent_run = parent_checkpoint = parent_number = None
    if resume_from:
        parent_run, parent_checkpoint = resolve_checkpoint(tracking, resume_from, model.id)
        parent = get_run(tracking, parent_run)
        parent_number = parent.data.tags.get(keys.RUN_NUMBER)
        check_resumable(cfg, host, parent.data.params)
        if parent_checkpoint:  # a damaged or code-carrying checkpoint is refused before a run
            read_checkpoint(tracking, parent_run, parent_checkpoint)  # exists (~20 ms locally)
    epochs = _epochs_of(epochs, cfg, host, model.dataset_info, resuming=bool(parent_run))
    if run_name is not None and (not run_name.strip() or not run_name.isprintable()):
        raise InvalidConfigError(
            f"Run name {run_name!r} is empty or holds a control character (a line break, tab "
            "or NUL); use letters, digits, spaces and punctuation."
        )
    options = {"address": address, "cpus": cpus, "gpus": gpus}
    options = {**(backend_options or {}), **{k: v for k, v in options.items() if v is not None}}
    runner = _backend_of(host, backend, options, in_process)
    runner.check(lab.settings.tracking_uri, cfg)

    number = int(model.experiment.tags.get(keys.RUN_COUNT, 0) or 0) + 1
    tags = {
        keys.RUN_KIND: "train",
        keys.RUN_VERSION: __version__,
        keys.RUN_NUMBER: str(number),
        keys.HEARTBEAT: str(int(time.time() * 1000)),
        keys.MLFLOW_SOURCE_NAME: "activelab",
        keys.MLFLOW_SOURCE_TYPE: "LOCAL",
        keys.MLFLOW_USER: _user(),  # the MLflow UI's "Created by"
        **runner.run_tags(),
    }
    if parent_run:
        tags.update(
            {
                keys.PARENT_RUN: parent_run,
                keys.PARENT_CHECKPOINT: parent_checkpoint or "",
                keys.MLFLOW_PARENT_RUN_ID: parent_run,  # nests the run under its parent in the UI
            }
        )
    # what the MLflow UI shows as the run's description; the worker adds labels and outcome
    tags[NOTE_TAG] = RunNote(model.name, epochs, cfg, parent_run, parent_checkpoint).markdown()
    name = run_name or _run_name(model, number, epochs, parent_number)
    run = tracking.create_run(model.id, name, tags)
    run_id = run.info.run_id
    params = _run_params(cfg, epochs, parent_run, parent_checkpoint)
    tracking.log_params(run_id, {k: v[:MAX_PARAM_LENGTH] for k, v in params.items()})
    model.touch(
        {keys.LATEST_RUN: run_id, keys.LATEST_RUN_STATUS: "RUNNING", keys.RUN_COUNT: str(number)}
    )

    spec = LaunchSpec(
        run_id=run_id,
        model_id=model.id,
        tracking_uri=lab.settings.tracking_uri,
        home=str(lab.settings.home),
        epochs=epochs,
        config=cfg.to_dict(),
        tasks_dirs=[str(d) for d in lab.settings.tasks_dirs],
        resume_run=parent_run,
        resume_checkpoint=parent_checkpoint,
        system_metrics=system_metrics,
        backend=runner.kind,
    )
    handle = TrainingHandle(model, run_id)
    if in_process or runner.kind == "local":  # its worker marks the end on this machine
        handle.end_mark = end_mark(spec.home, run_id)
    try:
        if in_process:
            handle._start_thread(spec, on_progress)
        else:
            handle.job = runner.start(spec, tracking)
    except BaseException as exc:
        mark_failed(tracking, tracking.get_run(run_id), f"Could not start the trainer: {exc}")
        raise TrainingError(f"Could not start the trainer: {exc}") from exc
    if wait:
        handle.wait(progress=progress)
    return handle


def _backend_of(host: Any, kind: str, options: dict[str, Any], in_process: bool) -> Backend:
    """The backend instance for one launch; bad options are refused before any run exists."""
    backend_cls = host.get("backends", kind)
    if in_process and kind != DEFAULT_BACKEND:
        raise InvalidConfigError(
            f"in_process trains in this process; it cannot run on the {kind} backend."
        )
    return backend_cls(**backend_cls.validate_params(options))


def _epochs_of(epochs: Any, cfg: ModelConfig, host: Any, info: Any, resuming: bool) -> int:
    """The launch's epochs: a whole number >= 1, or the trainer's default for the data."""
    if epochs is None:
        trainer = host.get("trainers", cfg.trainer)(**cfg.trainer_params)
        return trainer.default_epochs(info, resuming)
    if isinstance(epochs, bool) or not float(epochs).is_integer():
        raise InvalidConfigError(f"epochs must be a whole number, not {epochs!r}.")
    if int(epochs) < 1:
        raise InvalidConfigError(f"epochs must be at least 1, not {epochs}.")
    return int(epochs)


def check_resumable(cfg: ModelConfig, host: Any, parent_params: dict[str, str]) -> None:
    """Refuse, before any run exists, to continue a checkpoint whose network has another
    shape (e.g. another latent width): its weights would not load."""
    flat = cfg.flat_params()
    trainer_cls = host.get("trainers", cfg.trainer)
    keys_to_match = [f"trainer.{p}" for p in trainer_cls.architecture_params]
    for spec in cfg.tasks:
        task_cls = host.get("tasks", spec.kind)
        keys_to_match += [f"task.{spec.name}.{p}" for p in task_cls.architecture_params]
    changed = [
        f"{key} {parent_params[key]} -> {flat.get(key)}"
        for key in keys_to_match
        if key in parent_params and key in flat and parent_params[key] != flat[key]
    ]
    if changed:
        raise InvalidConfigError(
            "This run cannot continue that checkpoint: the network's shape changed ("
            + "; ".join(changed)
            + "). Start a fresh run (no resume_from) or set the old values back."
        )


def _user() -> str:
    """Who launches: the tracking server's login if there is one, else this machine's user."""
    import getpass

    try:
        return os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return "unknown"


def _run_params(
    cfg: ModelConfig, epochs: int, parent_run: str | None, parent_checkpoint: str | None
) -> dict[str, str]:
    """What the MLflow UI lists as the run's params: one value per setting, none empty.
    `epochs` is what this run trains (the config's `trainer.epochs` is only its default)."""
    params = {
        key: value
        for key, value in cfg.flat_params().items()
        if key != "trainer.epochs" and value not in ("", "None")
    }
    params["epochs"] = str(epochs)
    if parent_run:
        params["resume_from"] = f"{parent_run}:{parent_checkpoint}"
    return params


class TrainingHandle:
    """A launched run: its id, status and progress (read from MLflow), `wait()` and `stop()`."""

    def __init__(self, model: Model, run_id: str) -> None:
        self.model = model
        self.run_id = run_id
        self.job: Job | None = None  # the worker its backend started
        self.thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._thread_error: BaseException | None = None
        self._result: str | None = None
        self.end_mark: Path | None = None  # set when the run trains on this machine

    def __repr__(self) -> str:  # no call to MLflow: a repr must be cheap and change nothing
        return f"<TrainingHandle run={self.run_id} model={self.model.name!r}>"

    @property
    def _tracking(self) -> Any:
        return self.model.lab.tracking

    # --- starting -------------------------------------------------------------------------------

    def _start_thread(self, spec: LaunchSpec, on_progress: Any = None) -> None:
        def target() -> None:
            try:
                self._result = execute_run(spec, on_progress, stop_event=self._stop_event)
            except BaseException as exc:  # failed before its run could end itself
                self._thread_error = exc
                log.exception("The training thread of run %s failed", spec.run_id)

        self.thread = threading.Thread(
            target=target, name=f"{IN_PROCESS_RUN_THREAD}{spec.run_id[:8]}"
        )
        record_process(self._tracking, self.run_id, os.getpid())
        self.thread.start()

    @property
    def process(self) -> Any:
        """The local worker process (None on other backends and in-process runs)."""
        return getattr(self.job, "process", None)

    # --- following ----------------------------------------------------------------------------

    @property
    def run(self) -> Any:
        return get_run(self._tracking, self.run_id)

    @property
    def status(self) -> str:
        """MLflow's status of the run, as it is recorded (a read: it changes nothing).
        `check_alive()` also settles a run whose trainer is gone."""
        return str(self.run.info.status)

    def check_alive(self) -> str:
        """The run's status, after settling it if its trainer is gone without ending it: its
        unsent end is delivered, else it is marked FAILED with the reason. `wait()` calls it."""
        run = self.run
        if run.info.status in ACTIVE:
            reason = None
            if self.job is not None:
                reason = self.job.exit_reason()
            elif self.thread is not None and not self.thread.is_alive():
                error = self._thread_error
                reason = "The training thread ended without ending its run" + (
                    f": {type(error).__name__}: {error}" if error is not None else "."
                )
            elif self.thread is None:  # a handle made for a run started elsewhere
                reason = dead_reason(run)
            if reason:  # ended meanwhile, or left its end unsent: else FAILED
                settle_dead_run(self._tracking, self.run_id, reason)
                run = self.run
        return run.info.status

    @property
    def summary(self) -> RunSummary:
        return RunSummary.from_run(self.run)

    @property
    def progress(self) -> dict[str, Any] | None:
        raw = self.run.data.tags.get(keys.PROGRESS)
        return json.loads(raw) if raw else None

    @property
    def metrics(self) -> dict[str, float]:
        """The latest value of every metric."""
        return dict(self.run.data.metrics)

    def wait(
        self,
        timeout: float | None = None,
        progress: bool = False,
        poll: float = 0.2,
        follow_ups: bool = False,
    ) -> str:
        """Block until the run ends; returns its final status (TimeoutError after `timeout`).

        The run's predictions and checkpoints are in when it ends. `follow_ups=True` also waits
        for what the run does after its end: its logged model and the evaluation of a finished
        run (a few seconds), as the CLI does."""
        from activelab.connectivity import Outage
        from activelab.runtime import outage_wait_s

        deadline = None if timeout is None else time.monotonic() + timeout
        bar = _ProgressBar(self) if progress else None
        outage = Outage(self._tracking.uri, bar.say if bar else _say, outage_wait_s())
        # A run on this machine marks its end with a file: between reads of the run (each
        # costs the store a query, ~13 ms of CPU beside the trainer) a stat is enough.
        read_every = poll if self.end_mark is None else max(poll, READ_EVERY_S)
        tick = poll if self.end_mark is None else min(poll, MARK_POLL_S)
        next_read = 0.0
        try:
            while True:
                if time.monotonic() >= next_read or self._end_in_sight():
                    next_read = time.monotonic() + read_every
                    try:
                        status = self.check_alive()
                        if bar is not None:
                            bar.update()
                        outage.ok()
                    except Exception as exc:  # the run goes on; its outbox keeps what it logs
                        outage.failed(exc)
                        status = "RUNNING"
                    if status not in ACTIVE:
                        break
                self._check_deadline(deadline, f"still {status}")
                time.sleep(tick)
            if follow_ups:
                if bar is not None:
                    bar.say("Logging the model and evaluating the last checkpoint...")
                self._wait_for_follow_ups(deadline, poll)
        finally:
            if bar is not None:
                bar.close()
        return status

    def _end_in_sight(self) -> bool:
        """The end mark is there, or the trainer is gone: time to read the run."""
        if self.end_mark is None:
            return False
        return self.end_mark.exists() or self._trainer_gone()

    def _wait_for_follow_ups(self, deadline: float | None, poll: float) -> None:
        """Until the run says its follow-ups are done, or its trainer is gone (then they
        never will be), within `deadline` (else FOLLOW_UPS_WAIT_S)."""
        if deadline is None:
            deadline = time.monotonic() + FOLLOW_UPS_WAIT_S
        while self.run.data.tags.get(keys.FOLLOW_UPS) == "running":
            if self._trainer_gone():
                break
            self._check_deadline(deadline, "making its logged model and evaluation")
            time.sleep(poll)
        # and the trainer's own end (its process reaped, its thread joined)
        if self.job is not None:
            self.job.wait(timeout=60)
        if self.thread is not None:
            self.thread.join(timeout=60)

    def _trainer_gone(self) -> bool:
        if self.job is not None:
            return self.job.exit_reason() is not None
        if self.thread is not None:
            return not self.thread.is_alive()
        return trainer_process_ended(self.run)

    def _check_deadline(self, deadline: float | None, doing: str) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"Run {self.run_id} is {doing} after the time allowed.")

    def stop(self, wait: bool = True, timeout: float | None = 300) -> str:
        """Ask the run to stop at the next step; it saves a checkpoint and ends KILLED."""
        self._stop_event.set()
        request_stop(self._tracking, self.run_id)
        return self.wait(timeout=timeout) if wait else self.status


class _ProgressBar:
    """A tqdm bar over the run's progress tag: steps, epoch, loss, samples/s and ETA."""

    def __init__(self, handle: TrainingHandle) -> None:
        from tqdm import tqdm

        self.handle = handle
        self.bar = tqdm(total=None, unit="step", dynamic_ncols=True, desc="loading data")
        self.shown = 0

    def update(self) -> None:
        run = self.handle.run
        raw = run.data.tags.get(keys.PROGRESS)
        if not raw:
            return
        progress = json.loads(raw)
        total, done = progress.get("total_steps") or None, progress.get("run_steps", 0)
        if total and self.bar.total != total:
            self.bar.total = total
        if done > self.shown:
            self.bar.update(done - self.shown)
            self.shown = done
        finishing = total is not None and done >= total and run.info.status in ACTIVE
        self.bar.set_description(
            "saving the model" if finishing else f"epoch {progress.get('epoch', 0)}"
        )
        postfix = {"samples/s": f"{progress.get('samples_per_s', 0):.0f}"}
        loss = run.data.metrics.get("loss/total")
        if loss is not None:
            postfix["loss"] = f"{loss:.4g}"
        self.bar.set_postfix(postfix)

    def say(self, message: str) -> None:
        self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
