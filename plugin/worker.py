"""Runs one training run to its end: `python -m activelab.worker SPEC.json`.

It resumes the MLflow run the launcher created, loads data, labels and tasks, hands a
TrainingSession to the trainer, and always ends the run with MLflow's status: FINISHED,
KILLED (stopped) or FAILED (with the error on the run).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from activelab import keys
from activelab.connectivity import fail_fast_http, wait_until_reachable
from activelab.errors import ActivelabError
from activelab.priority import step_aside, yield_to_the_person
from activelab.run_note import NOTE_TAG, RunNote

if TYPE_CHECKING:
    from collections.abc import Callable

    from activelab.models import Model
    from activelab.outbox import Outbox
    from activelab.runtime import Progress

log = logging.getLogger(__name__)

SPEC_ENV = "ACTIVELAB_LAUNCH_SPEC"  # `python -m activelab.worker -` reads its spec from here
LABELS_ARTIFACT = "labels/labels.csv"  # the labels a run trained on, in its artifacts
USAGE = (
    "usage: python -m activelab.worker SPEC.json | - | --standby\n"
    f"  -: read the launch spec (JSON) from ${SPEC_ENV}, as remote backends pass it"
)


@dataclass
class LaunchSpec:
    """Everything a worker needs to run a launched run (written as JSON by the launcher)."""

    run_id: str
    model_id: str
    tracking_uri: str
    home: str
    epochs: int
    config: dict[str, Any]
    tasks_dirs: list[str] = field(default_factory=list)
    resume_run: str | None = None
    resume_checkpoint: str | None = None
    system_metrics: bool = True
    backend: str = "local"  # the local backend records the worker's pid itself

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> LaunchSpec:
        return cls(**json.loads(text))


def _log_labels(model: Model, tracking: Any, run_id: str) -> tuple[Any, str, int]:
    """Snapshot the labels this run trains on: artifact, dataset input and tags. The dataset's
    source is that artifact, which reads the same from every machine that reaches the server."""
    import mlflow
    import pandas as pd
    from mlflow.data.pandas_dataset import from_pandas

    from activelab.dataset_source import RunArtifactDatasetSource

    store = model.labels
    store.refresh()
    labels = store.as_array()
    digest = store.digest()
    indices = [int(i) for i in (labels >= 0).nonzero()[0]]
    files = model.sample_files()  # an image folder's labels name their files too
    columns: dict[str, list[Any]] = {"sample_index": indices}
    if files is not None:
        columns["path"] = [files.files[i] for i in indices]
    frame = pd.DataFrame({**columns, "label": [store.info.classes[labels[i]] for i in indices]})
    tracking.log_text(run_id, store.to_csv(files), LABELS_ARTIFACT)
    source = RunArtifactDatasetSource(f"runs:/{run_id}/{LABELS_ARTIFACT}")
    input_tags = {"labeled": str(len(indices)), "samples of": model.config.dataset}
    # MLflow's hint about integer columns (sample indices never miss) does not apply; the
    # schema is inferred when the input is logged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dataset = from_pandas(
            frame, source=source, name=labels_dataset_name(model.name), digest=digest,
            targets="label",
        )  # fmt: skip
        mlflow.log_input(dataset, context="training", tags=input_tags)
    return labels, digest, len(indices)


def labels_dataset_name(model_name: str) -> str:
    """The name of a run's labels as an MLflow dataset (its digest tells label sets apart)."""
    return f"{model_name}-labels"


def _error_message(exc: BaseException) -> str:
    if isinstance(exc, ActivelabError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:  # a full or read-only disk, say which file
        where = f" {exc.filename}" if exc.filename else ""
        return (
            f"Could not write{where}: {exc.strerror}. Free disk space or make the folder "
            "writable, then continue from the last checkpoint."
        )
    return f"{type(exc).__name__}: {exc}"


def _record_error(outbox: Outbox, exc: BaseException) -> str:
    """The error as a tag and its traceback as `error.txt` (through the outbox, so an
    unreachable server loses neither); returns the one-line message."""
    message = _error_message(exc)
    outbox.set_run_tags({keys.ERROR: message[:4900]})
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        outbox.artifact("error.txt", "", lambda path: path.write_text(trace, encoding="utf-8"))
    except OSError:
        log.exception("Could not save the traceback of the error")
    return message


def _end_fluent_run(run_id: str, status: str) -> None:
    """End MLflow's fluent run; the outbox has already sent (or spooled) the status, so a
    server that is still down only costs a warning here."""
    import mlflow
    from mlflow.tracking import fluent

    active = mlflow.active_run()
    if active is None or active.info.run_id != run_id:
        return  # it never started; another run's status is not ours to set
    try:
        mlflow.end_run(status)
    except Exception as exc:
        log.warning("Could not end the run in MLflow now (%s); the spool will.", exc)
        # end_run raised before stopping the run's system-metrics thread
        monitor = fluent.run_id_to_system_metrics_monitor.pop(run_id, None)
        if monitor is not None:
            monitor.finish()


def _deliver_in_background(deliver: Any, spec: LaunchSpec, tracking: Any) -> None:
    """Send what earlier runs left unsent (an outage outlasted them) without delaying this one."""

    def run() -> None:
        try:
            counts = deliver(spec.home, tracking)
            if counts["items"]:
                log.info("delivered %(items)d item(s) left by %(runs)d earlier run(s)", counts)
        except Exception:
            log.warning("Delivering earlier runs' unsent items failed", exc_info=True)

    threading.Thread(target=run, name="activelab-deliver-pending", daemon=True).start()


def execute_run(
    spec: LaunchSpec,
    on_progress: Callable[[Progress], None] | None = None,
    stop_event: threading.Event | None = None,
    before_follow_ups: Callable[[], None] | None = None,
) -> str:
    """Run `spec` in this process; returns the final status. The run's follow-ups (its logged
    model, the evaluation after training) come after its end, so whoever waits for the run
    has its predictions and checkpoints without waiting for them; `before_follow_ups` is
    called first (a worker process lowers its priority: the next round comes first)."""
    import mlflow

    from activelab.backend import record_process
    from activelab.config import ModelConfig
    from activelab.models import Lab
    from activelab.outbox import Outbox, deliver_pending
    from activelab.runs import read_checkpoint
    from activelab.runtime import (
        RunContext,
        TrainingSession,
        build_tasks,
        build_trainer,
        outage_wait_s,
    )

    wait_until_reachable(spec.tracking_uri, outage_wait_s(), say=log.warning)
    lab = Lab(tracking_uri=spec.tracking_uri, home=spec.home or None, tasks_dirs=spec.tasks_dirs)
    spec.home = str(lab.settings.home)  # "" (a remote backend's worker): this machine's home
    tracking = lab.tracking
    if spec.backend != "local":
        # started by a remote backend: name this process, so whoever looks can tell it lives
        record_process(lab.tracking, spec.run_id, os.getpid())
    host = lab.plugins
    model = lab.get_model(spec.model_id)
    config = ModelConfig.from_dict(spec.config)
    run = tracking.get_run(spec.run_id)
    context = RunContext(
        model_id=model.id, model_name=model.name, run_id=spec.run_id,
        run_name=run.info.run_name, tracking_uri=spec.tracking_uri, config=config,
        epochs=spec.epochs, parent_run=spec.resume_run,
    )  # fmt: skip
    _deliver_in_background(deliver_pending, spec, tracking)
    outbox = Outbox(tracking, spec.run_id, model.id, spec.home).start()
    if stop_event is not None:
        outbox.stop_requested = stop_event
    mlflow.set_tracking_uri(spec.tracking_uri)
    note = RunNote(model.name, spec.epochs, config, spec.resume_run, spec.resume_checkpoint)
    status, session, data = "FAILED", None, None
    error: BaseException | None = None
    try:
        # nested: a run another thread of this process left active must not stop this one
        mlflow.start_run(run_id=spec.run_id, nested=True, log_system_metrics=spec.system_metrics)
        resume = None
        if spec.resume_run and spec.resume_checkpoint:
            resume = read_checkpoint(lab.tracking, spec.resume_run, spec.resume_checkpoint)
            context.start_epoch = int(resume.get("epoch", 0))
        outbox.set_run_tags(
            {
                keys.START_EPOCH: str(context.start_epoch),
                keys.EPOCHS_TOTAL: str(context.start_epoch),
            }
        )
        log.info("loading data set %s", config.dataset)
        data = _load_data(host, config, spec.backend)
        labels, digest, count = _log_labels(model, tracking, spec.run_id)
        note.labeled, note.labels_digest = count, digest
        context.labels_dataset = (labels_dataset_name(model.name), digest)
        outbox.set_run_tags(
            {keys.LABELS_DIGEST: digest, keys.RUN_LABELED_COUNT: str(count),
             NOTE_TAG: note.markdown()}
        )  # fmt: skip
        tasks = build_tasks(config, host, data.info)
        trainer = build_trainer(config, host)
        session = TrainingSession(
            context, outbox, host, data, labels, tasks, spec.epochs,
            start_epoch=context.start_epoch, resume=resume, on_progress=on_progress,
        )  # fmt: skip
        host.on_train_start(context)
        log.info("training %d epoch(s) from epoch %d", spec.epochs, context.start_epoch)
        trainer.fit(session)
        stopped = session.stop_requested and session.epochs_done < spec.epochs
        status = "KILLED" if stopped else "FINISHED"
    except KeyboardInterrupt as exc:
        status, error = "KILLED", exc
    except BaseException as exc:
        status, error = "FAILED", exc
        note.error = _record_error(outbox, exc)
    finally:
        follow_ups = _follow_ups(status, session, model, spec.run_id, data)
        if session is not None:
            session.finish()
            note.epochs_done, note.final_loss = session.epochs_done, session.final_loss
        note.status = status
        # before the end: whoever sees the run ended also sees that follow-ups are on the way
        outbox.set_run_tags({NOTE_TAG: note.markdown()} | _follow_ups_tag(follow_ups))
        outbox.set_experiment_tags(
            {keys.LATEST_RUN_STATUS: status, keys.UPDATED_AT: str(int(time.time() * 1000))}
        )
        if outbox.close(status, wait_s=outage_wait_s()):
            _mark_ended(spec)
        log.info("run ended: %s", status)
        host.on_train_end(context, status, error)
        _end_fluent_run(spec.run_id, status)
    if follow_ups:
        if before_follow_ups is not None:
            before_follow_ups()
        _run_follow_ups(follow_ups, tracking, spec.run_id)
    return status


def _mark_ended(spec: LaunchSpec) -> None:
    """Tell a launcher on this machine that the run's end is in MLflow (see backend.end_mark)."""
    from activelab.backend import end_mark

    mark = end_mark(spec.home, spec.run_id)
    try:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
    except OSError as exc:  # its launcher then finds the end in MLflow, a little later
        log.warning("Could not write the run's end mark %s: %s", mark, exc)


def _follow_ups(
    status: str, session: Any, model: Any, run_id: str, data: Any
) -> list[Callable[[], None]]:
    """What a run does after its end: what its trainer queued (the logged model), unless it
    failed, and the evaluation of a finished run's last checkpoint."""
    if status == "FAILED" or session is None:
        return []
    work = list(session.follow_ups)
    if status == "FINISHED" and session.last_checkpoint:
        work.append(lambda: _evaluate_after_training(model, run_id, data))
    return work


def _follow_ups_tag(follow_ups: list[Callable[[], None]]) -> dict[str, str]:
    return {keys.FOLLOW_UPS: "running"} if follow_ups else {}


def _run_follow_ups(follow_ups: list[Callable[[], None]], tracking: Any, run_id: str) -> None:
    """Each follow-up in turn (a failure is logged and never touches the run's status), then
    the run drops its follow-ups tag (`wait(follow_ups=True)` waits for that)."""
    for work in follow_ups:
        try:
            work()
        except Exception:
            log.warning("A follow-up of the run failed", exc_info=True)
    try:
        tracking.delete_run_tag(run_id, keys.FOLLOW_UPS)
    except Exception as exc:  # a waiter then stops at its own bound or at the process's end
        log.warning("Could not record that the run's follow-ups are done: %s", exc)


def _load_data(host: Any, config: Any, backend: str) -> Any:
    """The run's data; on a remote backend, a missing file says where it was looked for."""
    from activelab.errors import DatasetUnavailableError

    try:
        return host.get("datasets", config.dataset)(**config.dataset_params).load()
    except (DatasetUnavailableError, OSError) as exc:
        if backend == "local":
            raise
        raise DatasetUnavailableError(
            f"{_error_message(exc)} (on {socket.gethostname()}, where the {backend} backend "
            "runs this run: the data set's files must be at the same path on every node, or "
            "on storage every node mounts)."
        ) from exc


def _evaluate_after_training(model: Any, run_id: str, data: Any) -> None:
    """Every finished run gets an evaluation of its last checkpoint (an eval run under it)."""
    from activelab.evaluation import evaluate_run

    log.info("evaluating the last checkpoint")
    evaluate_run(model, run_id, data=data)


def _install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM / SIGINT ask for a graceful stop; a second signal ends the process at once.

    Counted per signal, not from `stop`: `runs stop` sets the stop tag and then signals a
    trainer on its machine, and a trainer that saw the tag first must take that signal as
    the first one (it once died at once this way, FAILED without its checkpoint)."""
    signalled = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if signalled.is_set():
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        signalled.set()
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--standby"]:
        return serve_warm()
    if args != ["-"]:  # a cluster's job runs on a machine of its own
        yield_to_the_person()
    if len(args) != 1:
        print(USAGE, file=sys.stderr)
        return 2
    _configure_logging()
    if args[0] == "-":
        return run_spec(LaunchSpec.from_json(os.environ[SPEC_ENV]))
    return run_spec(LaunchSpec.from_json(Path(args[0]).read_text()))


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    fail_fast_http()  # the outbox retries on its own terms


def run_spec(spec: LaunchSpec) -> int:
    log.info("worker for run %s started", spec.run_id)
    stop = threading.Event()
    _install_stop_signals(stop)
    status = execute_run(spec, stop_event=stop, before_follow_ups=step_aside)
    print(f"run {spec.run_id} ended: {status}", file=sys.stderr, flush=True)
    return 0 if status in ("FINISHED", "KILLED") else 1


def _fail_unstarted(spec_path: Path, exc: Exception) -> None:
    """Mark FAILED a run that failed before `execute_run` could end it."""
    from activelab.settings import Settings
    from activelab.tracking import Tracking

    try:
        spec = LaunchSpec.from_json(spec_path.read_text())
        tracking = Tracking(Settings.resolve(spec.tracking_uri, spec.home or None))
        tracking.set_run_tags(spec.run_id, {keys.ERROR: _error_message(exc)[:4900]})
        tracking.end_run(spec.run_id, "FAILED")
    except Exception:
        log.exception("could not mark the run of %s failed", spec_path)


def serve_warm() -> int:
    """The warm worker (see activelab.standby): import everything, then fork a worker per
    launch read from stdin (a JSON line: spec, env, cwd), answering its pid, and its exit
    code when it ends; ends at EOF (the workers it forked go on)."""
    from activelab.standby import EXIT_PREFIX, PID_PREFIX, READY, warm_up

    control = os.fdopen(os.dup(1), "wb", buffering=0)  # answers for the launcher
    os.dup2(2, 1)  # anything else printed goes where stderr goes
    sys.stdout = sys.stderr

    def reap(signum: int, frame: Any) -> None:
        """A forked worker ended: reap it and tell its launcher how (killed: -9...)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):  # its launcher may be gone
                control.write(EXIT_PREFIX + f"{pid} {code}".encode() + b"\n")

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # its own session: stops come as tags
    signal.signal(signal.SIGCHLD, reap)
    launcher_nice = os.nice(0)
    yield_to_the_person()  # its imports yield too; each worker then takes its launch's value
    warm_up()
    control.write(READY + b"\n")
    for line in sys.stdin:
        request = json.loads(line)
        # Its `pid` line goes before any `exit` line of it: reaping waits until it is written.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        pid = os.fork()
        if pid == 0:
            control.close()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            _run_forked(request, launcher_nice)  # never returns
        with contextlib.suppress(OSError):  # its launcher may be gone; EOF ends the loop
            control.write(PID_PREFIX + str(pid).encode() + b"\n")
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    return 0


def _run_forked(request: dict[str, Any], launcher_nice: int) -> NoReturn:
    """In a child of the warm worker: become the launcher's worker for one spec, then exit."""
    code = 1
    try:
        os.setsid()  # its own session, as a worker of its own has
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        spec_path = Path(request["spec"])
        log_fd = os.open(
            spec_path.parent / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        null_fd = os.open(os.devnull, os.O_RDONLY)  # not the warm worker's launch pipe
        os.dup2(null_fd, 0)
        os.close(null_fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        yield_to_the_person(launcher_nice)
        _configure_logging()
        try:
            code = run_spec(LaunchSpec.from_json(spec_path.read_text()))
        except Exception as exc:  # failed before its run started: end it
            log.exception("the run from %s failed before it started", spec_path)
            _fail_unstarted(spec_path, exc)
    except BaseException:
        traceback.print_exc()
    # The interpreter's own exit, as a worker of its own ends: threads joined, exit handlers
    # run; nothing above catches it (the warm worker's loop lives on in the parent only).
    sys.exit(code)


if __name__ == "__main__":
    sys.exit(main())
