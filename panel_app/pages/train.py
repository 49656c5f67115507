"""Train: forms generated from the plugins' declarations, task management, launching, and a
live monitor of any run of the model (it reads MLflow, so scripted runs show up too)."""

from __future__ import annotations

import csv
import functools
import io
import logging
import textwrap
from datetime import datetime
from typing import Any

import pandas as pd
import panel as pn
import param

from activelab.humanize import run_state
from activelab.panel_app.pages.common import (
    Page,
    banner,
    duration,
    error_banner,
    esc,
    fmt,
    note,
    status_badge,
)
from activelab.panel_app.pages.curves import CurvePlot, short
from activelab.panel_app.vm.home import describe_error
from activelab.panel_app.vm.monitor import (
    EPOCH_FAMILIES,
    EPOCH_PREFIXES,
    OTHER,
    STEP_PREFIX,
    RunMonitor,
    epoch_family,
)
from activelab.panel_app.vm.state import AppState
from activelab.panel_app.vm.train import TrainViewModel
from activelab.presets import PRESETS
from activelab.runs import ACTIVE

log = logging.getLogger(__name__)

POLL_MS = 1000  # live curves: a metric is drawn within ~1-2 s of being logged
HISTORY_EVERY = 3  # polls between history refreshes while nothing runs
# "epochs": trained in that run; the lineage's total is the progress line's and Compare's
HISTORY_FIRST_COLUMNS = ("run", "status", "started", "duration", "epochs", "from")


def param_widgets(instance: Any, names: list[str]) -> dict[str, Any]:
    """Typed boxes instead of sliders for numbers: a learning rate of 1e-3 on a slider
    shows as 0, and most bounds here are open-ended. A plugin's parameter docs become the
    widgets' tooltips, which Bokeh renders as HTML: escaped here."""
    widgets: dict[str, Any] = {}
    for name in names:
        declared = instance.param[name]
        options: dict[str, Any] = {}
        if isinstance(declared, param.Integer):
            options["type"] = pn.widgets.IntInput
        elif isinstance(declared, param.Number):
            options.update(type=pn.widgets.FloatInput, format="0.[000000]")
        widget_class = options.get("type") or pn.Param.widget_type(declared)
        if declared.doc and "description" in widget_class.param:  # a checkbox has none
            options["description"] = esc(textwrap.dedent(declared.doc).strip())
        widgets[name] = options
    return widgets


class TrainPage(Page):
    poll_ms = POLL_MS

    def __init__(self, state: AppState, **params: Any) -> None:
        super().__init__(state, **params)
        self.vm = TrainViewModel(state)
        self._loaded_model = ""
        self._building = False  # the task forms are being (re)built: their events are ours
        self._polls = 0
        self._busy = False
        self.monitor: RunMonitor | None = None
        self._shown_status = ""  # the run status the monitor shows

        self.status = pn.pane.HTML("", sizing_mode="stretch_width")
        self.message = pn.pane.HTML("", sizing_mode="stretch_width")
        self._stop_asked_for: str | None = None  # the run a "Stop requested" note is about
        # --- trainer ---
        self.trainer = pn.widgets.Select(label="Trainer", options=[], width=200)
        self.trainer.param.watch(self._trainer_picked, "value")
        self.preset = pn.widgets.Select(label="Preset", options=list(PRESETS), width=150)
        self.apply_preset = pn.widgets.Button(label="Apply preset", align="end")
        self.apply_preset.on_click(lambda e: self._apply_preset())
        self.trainer_form = pn.Column(sizing_mode="stretch_width")
        # --- tasks ---
        self.tasks = pn.Column(sizing_mode="stretch_width")
        self.new_kind = pn.widgets.Select(label="Task class", options=[], width=160)
        self.new_name = pn.widgets.TextInput(label="Name", placeholder="as the class", width=120)
        self.new_weight = pn.widgets.FloatInput(label="Weight", value=1.0, start=0, width=90)
        self.new_slice = pn.widgets.TextInput(label="Latent slice", placeholder="all", width=90)
        self.add_button = pn.widgets.Button(label="Add task", color="primary", align="end")
        self.add_button.on_click(lambda e: self._add_task())
        self.load_errors = pn.pane.HTML("", sizing_mode="stretch_width")
        # --- launch ---
        self.epochs = pn.widgets.IntInput(
            label="Epochs", value=10, start=1, end=100_000, width=100, css_classes=["al-epochs"]
        )
        self.epochs.param.watch(self._epochs_changed, "value")
        self.run_name = pn.pane.HTML("", sizing_mode="stretch_width")
        self.problems = pn.pane.HTML("", sizing_mode="stretch_width")
        self.start_button = pn.widgets.Button(label="Start training", color="success")
        # where the worker runs: this machine, a Ray cluster, a plugin's backend
        self.backend = pn.widgets.Select(label="Run on", options=["local"], width=100)
        self.backend.param.watch(self._backend_picked, "value")
        self.backend_address = pn.widgets.TextInput.from_param(
            self.vm.param.backend_address, label="Address", placeholder="http://HEAD:8265",
            width=170, visible=False,
        )  # fmt: skip
        self.backend_cpus = pn.widgets.FloatInput.from_param(
            self.vm.param.backend_cpus, label="CPUs", placeholder="1", width=60, visible=False
        )
        self.backend_gpus = pn.widgets.FloatInput.from_param(
            self.vm.param.backend_gpus, label="GPUs", placeholder="0", width=60, visible=False
        )
        self.start_button.on_click(lambda e: self._launch(self.vm.start, "Started"))
        # --- monitor ---
        self.run_title = pn.pane.HTML("", sizing_mode="stretch_width")
        self.progress = pn.indicators.Progress(
            value=0, max=1000, sizing_mode="stretch_width", height=14, bar_color="primary"
        )
        self.figures = pn.pane.HTML("", sizing_mode="stretch_width")
        self.stop_button = pn.widgets.Button(label="Stop", color="danger", visible=False)
        self.stop_button.on_click(lambda e: self._stop())
        self.checkpoint = pn.widgets.Select(
            label="Checkpoint", options=[], width=220, visible=False
        )
        self.continue_button = pn.widgets.Button(
            label="Continue from checkpoint", visible=False, align="end"
        )
        self.continue_button.on_click(
            lambda e: self._launch(
                lambda: self.vm.continue_from(self.vm.run_id, self.checkpoint.value), "Continued"
            )
        )
        self.retry_button = pn.widgets.Button(label="Retry", visible=False, align="end")
        self.retry_button.on_click(
            lambda e: self._launch(lambda: self.vm.retry(self.vm.run_id), "Retried")
        )
        # a finished run's logged model into MLflow's Model Registry, under an alias
        self.alias = pn.widgets.TextInput(
            label="Alias", value="champion", width=110, visible=False,
            description="The registered version gets this alias: models:/NAME@alias",
        )  # fmt: skip
        self.register_button = pn.widgets.Button(
            label="Register model", visible=False, align="end",
            description="Put this run's trained model into MLflow's Model Registry",
        )  # fmt: skip
        self.register_button.on_click(lambda e: self._register())
        self.smoothing = pn.widgets.FloatSlider(
            label="Smoothing", start=0, end=0.99, step=0.01, value=0.6, width=180
        )
        self.log_scale = pn.widgets.Checkbox(label="Log scale", value=False, align="end")
        self.step_plot = CurvePlot("Loss per step", "step", "train-steps")
        # per-epoch figures as small multiples: one panel (and axis) per family, so losses
        # (tens to hundreds) do not flatten accuracies (0 to 1)
        self.epoch_plots = {
            family: CurvePlot(title, "epoch", f"train-epochs-{family}")
            for family, title in EPOCH_FAMILIES.items()
        }
        # one small plot per other figure (its own axis), made when a run first logs it
        self.other_plots: dict[str, CurvePlot] = {}
        self.other_column = pn.Column(sizing_mode="stretch_width")
        self.smoothing.param.watch(lambda e: self._restyle(), "value")
        self.log_scale.param.watch(lambda e: self._restyle(), "value")
        self.csv = pn.widgets.FileDownload(
            callback=self._csv,
            filename="curves.csv",
            label="Curves as CSV",
            color="light",
            align="end",
            width=140,
        )
        self.history = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, show_index=False, selectable=False,
            sizing_mode="stretch_width", height=240, layout="fit_data_stretch",
            formatters={"MLflow": {"type": "link", "labelField": "open", "target": "_blank"}},
        )  # fmt: skip
        self.history.on_click(self._history_clicked)
        self.vm.param.watch(lambda *e: self.ui.call(self._follow), "run_id")
        self.vm.param.watch(lambda *e: self.ui.call(self._render_history), "history")

    # --- layout -------------------------------------------------------------------------------

    def __panel__(self) -> pn.viewable.Viewable:
        # What a person does on this page, always in view while the forms and curves scroll:
        # epochs, where it runs, start; and for the run shown, stop / continue / retry.
        action_bar = pn.Column(
            pn.Row(self.epochs, self.start_button, self.stop_button, self.checkpoint,
                   self.continue_button, self.retry_button, self.alias, self.register_button,
                   self.backend, self.backend_address,
                   self.backend_cpus, self.backend_gpus,
                   styles={"flex-wrap": "wrap", "align-items": "end"},
                   sizing_mode="stretch_width"),
            self.message,
            css_classes=["al-action-bar"],
            sizing_mode="stretch_width",
        )  # fmt: skip
        config = pn.Column(
            pn.pane.HTML("<h3 class='al-h'>Trainer</h3>"),
            pn.Row(self.trainer, self.preset, self.apply_preset, styles={"flex-wrap": "wrap"}),
            self.trainer_form,
            pn.pane.HTML("<h3 class='al-h'>Tasks</h3>"),
            self.tasks,
            pn.Column(pn.FlexBox(self.new_kind, self.new_name, self.new_weight, self.new_slice,
                                 self.add_button, gap="4px", sizing_mode="stretch_width"),
                      width=390),
            self.load_errors,
            width=400,
            styles={"flex-shrink": "0"},
            css_classes=["al-train-config"],
        )  # fmt: skip
        monitor = pn.Column(
            self.run_title,
            self.progress,
            self.figures,
            pn.Row(self.smoothing, self.log_scale, pn.HSpacer(), self.csv,
                   sizing_mode="stretch_width", styles={"flex-wrap": "wrap"}),
            self.step_plot.pane,
            *(plot.pane for plot in self.epoch_plots.values()),
            self.other_column,
            pn.pane.HTML("<h3 class='al-h'>Job history</h3>"),
            self.history,
            styles={"flex": "1 1 520px", "min-width": "320px"},
            sizing_mode="stretch_width",
            css_classes=["al-train-monitor"],
        )  # fmt: skip
        return pn.Column(
            self.status,
            action_bar,
            self.run_name,
            self.problems,
            pn.Row(config, monitor, styles={"flex-wrap": "wrap", "gap": "18px"},
                   sizing_mode="stretch_width"),
            # the page scrolls inside its own box, so the action bar can stick to its top
            scroll=True,
            sizing_mode="stretch_both",
        )  # fmt: skip

    # --- page life ------------------------------------------------------------------------------

    def shown(self) -> None:
        model_id = self.state.model_id
        if not model_id:
            self.status.object = (
                "<div class='al-empty'><p>Pick a model on the Home page to train it.</p></div>"
            )
        elif model_id != self._loaded_model:
            self._load(model_id)

    def model_changed(self) -> None:
        if self.state.model_id and self.state.model_id != self._loaded_model:
            self._load(self.state.model_id)

    def _load(self, model_id: str) -> None:
        self._loaded_model = model_id
        try:
            self.vm.load(model_id)
        except Exception as exc:
            self.status.object = error_banner(exc)
            return
        self.status.object = ""
        self.vm.plugins_changed()
        self.epochs.value = self.vm.epochs
        self._build_config()
        self._render_history()
        self._follow()

    # --- the config forms -------------------------------------------------------------------------

    def _build_config(self) -> None:
        """Forms from the declarations: a new plugin gets its form with no UI code."""
        vm = self.vm
        config = vm.config
        host = self.state.lab.plugins
        self._building = True
        try:
            self.trainer.param.update(options=vm.trainer_kinds(), value=config.trainer)
            backends = list(vm.backend_kinds())
            if vm.backend not in backends:
                vm.backend = "local"
            self.backend.param.update(options=backends, value=vm.backend)
            self._show_backend_options()
            kinds = vm.task_kinds()
            self.new_kind.options = list(kinds)
            if self.new_kind.value not in kinds:
                self.new_kind.value = next(iter(kinds), None)
            trainer_cls = host.get("trainers", config.trainer)
            trainer = trainer_cls(**config.trainer_params)
            self.trainer_form[:] = [
                pn.Card(
                    self._form(trainer, self._trainer_param_changed),
                    title=f"{config.trainer} settings",
                    collapsed=True,
                    sizing_mode="stretch_width",
                )
            ]
            cards = []
            for spec in config.tasks:
                cards.append(self._task_card(spec, kinds))
            self.tasks[:] = cards or [
                pn.pane.HTML("<p class='al-muted'>No tasks: add one below.</p>")
            ]
            errors = vm.load_errors()
            self.load_errors.object = (
                "<div class='al-banner'><b>Plugins that did not load</b><ul>"
                + "".join(f"<li><code>{esc(e)}</code></li>" for e in errors)
                + "</ul></div>"
                if errors
                else ""
            )
        finally:
            self._building = False
        self._preflight()

    def _form(self, instance: Any, changed: Any, exclude: tuple[str, ...] = ()) -> Any:
        names = [s.name for s in instance.param_specs(include_common=True) if s.name not in exclude]
        instance.param.watch(changed, names)
        return pn.Param(
            instance, parameters=names, show_name=False, sizing_mode="stretch_width",
            default_layout=pn.Column, widgets=param_widgets(instance, names),
        )  # fmt: skip

    def _task_card(self, spec: Any, kinds: dict[str, str]) -> Any:
        host = self.state.lab.plugins
        try:
            task_cls = host.get("tasks", spec.kind)
        except Exception as exc:  # its file was deleted or broke: say so, keep the rest
            body: Any = pn.pane.HTML(error_banner(exc))
        else:
            task = task_cls(
                name=spec.name, weight=spec.weight, enabled=spec.enabled,
                latent_slice=spec.latent_slice, **spec.params,
            )  # fmt: skip
            body = self._form(
                task, lambda *events, name=spec.name: self._task_changed(name, events)
            )
        remove = pn.widgets.Button(label="Remove", color="light", width=80)
        remove.on_click(functools.partial(self._remove_task, spec.name))
        title = f"{spec.name} ({spec.kind})" + ("" if spec.enabled else " — disabled")
        return pn.Card(
            pn.pane.HTML(f"<p class='al-muted'>{esc(kinds.get(spec.kind, ''))}</p>"),
            body, remove, title=title, collapsed=False, sizing_mode="stretch_width",
            margin=(2, 0),
        )  # fmt: skip

    def _trainer_param_changed(self, *events: Any) -> None:
        if self._building:
            return
        for event in events:
            self._edit(lambda e=event: self.vm.set_trainer_param(e.name, e.new))

    def _task_changed(self, task: str, events: Any) -> None:
        if self._building:
            return
        for event in events:
            self._edit(lambda e=event: self.vm.set_task_field(task, e.name, e.new))

    def _trainer_picked(self, event: Any) -> None:
        if self._building or not event.new or event.new == self.vm.config.trainer:
            return
        self._edit(lambda: self.vm.set_trainer(event.new), rebuild=True,
                   done=f"Trainer set to {event.new!r}.")  # fmt: skip

    def _add_task(self) -> None:
        kind = self.new_kind.value
        if not kind:
            self._say("Pick a task class first.", error=True)
            return
        self._edit(
            lambda: self.vm.add_task(kind, self.new_name.value or "",
                                     self.new_weight.value or 0.0, self.new_slice.value or ""),
            rebuild=True, done=f"Added a {kind!r} task.",
        )  # fmt: skip

    def _apply_preset(self) -> None:
        preset = self.preset.value
        self._edit(
            lambda: self.vm.apply_preset(preset), rebuild=True, done=f"Applied preset {preset!r}."
        )

    def _remove_task(self, name: str, event: Any = None) -> None:
        self._edit(lambda: self.vm.remove_task(name), rebuild=True, done=f"Removed task {name!r}.")
        self.new_name.value = ""

    def _edit(self, action: Any, rebuild: bool = False, done: str = "") -> bool:
        """Save one config change; a rejected change is explained and the form reset."""
        try:
            action()
        except Exception as exc:
            self._say(describe_error(exc), error=True)
            self._build_config()  # show what is saved, not what was refused
            return False
        self._say(f"✓ Saved. {done}" if done else "✓ Saved.")
        if rebuild:
            self._build_config()
        else:
            self._preflight()
        return True

    def _backend_picked(self, event: Any) -> None:
        if event.new and event.new != self.vm.backend:
            self.vm.backend = event.new
            self._show_backend_options()

    def _show_backend_options(self) -> None:
        takes = self.vm.backend_takes()
        self.backend_address.visible = "address" in takes
        self.backend_cpus.visible = "cpus" in takes
        self.backend_gpus.visible = "gpus" in takes

    def _epochs_changed(self, event: Any) -> None:
        if event.new:
            self.vm.epochs = int(event.new)
            self._preflight()

    def _preflight(self) -> None:
        """Run name preview and what would stop a launch, before anything starts."""
        if not self.vm.has_model:
            return
        problems = self.vm.config_problems()
        running = self.vm.running()
        # a run in training is a state, not a fault: said plainly, not as a warning
        waiting = (
            f" — Start is available when “{esc(running.name)}” ends (or stop it)."
            if running is not None
            else ""
        )
        self.run_name.object = (
            f"<p class='al-muted'>Next run: <b>{esc(self.vm.run_name_preview())}</b>{waiting}</p>"
        )
        self.problems.object = "".join(banner(p) for p in problems)
        self.start_button.disabled = bool(problems) or running is not None

    def _say(self, text: str, error: bool = False) -> None:
        self.message.object = f"<div style='margin:4px 0'>{note(text, ok=not error)}</div>"

    # --- launching ----------------------------------------------------------------------------

    def _launch(self, action: Any, verb: str) -> None:
        """Launching starts a process and returns; done in a thread so the page never waits."""
        self.start_button.disabled = True
        self._say(f"{verb.rstrip('ed')}ing…" if verb != "Retried" else "Retrying…")

        def done(handle: Any) -> None:
            self._say(f"{verb} run {handle.run_id[:8]}: {self.vm.history[0].name}.")
            self._preflight()

        def failed(exc: BaseException) -> None:
            self._say(describe_error(exc), error=True)
            self._preflight()

        self.ui.background(action, done=done, failed=failed)

    def _stop(self) -> None:
        try:
            self.vm.stop()
        except Exception as exc:
            self._say(describe_error(exc), error=True)
            return
        self.stop_button.disabled = True
        self._stop_asked_for = self.vm.run_id  # the note is replaced once the run has ended
        self._say("Stop requested: the run saves a checkpoint and ends at the next step.")

    def _register(self) -> None:
        run_id = self.vm.run_id
        self.register_button.disabled = True
        self._say("Registering the model (waits for its export if the run just ended)…")

        def done(made: Any) -> None:
            self.register_button.disabled = False
            self._say(
                f"Registered {made.name!r} version {made.version} as {made.uri}: "
                f"mlflow.pyfunc.load_model('{made.uri}') or mlflow models serve -m {made.uri}."
            )

        def failed(exc: BaseException) -> None:
            self.register_button.disabled = False
            self._say(describe_error(exc), error=True)

        self.ui.background(lambda: self.vm.register(run_id, self.alias.value or ""), done=done,
                           failed=failed)  # fmt: skip

    # --- the monitor ----------------------------------------------------------------------------

    def _follow(self) -> None:
        """Load the curves of the run the view-model follows (in a thread)."""
        run_id = self.vm.run_id
        if not run_id:
            self.monitor = None
            self.run_title.object = (
                "<div class='al-empty'><p>No runs yet. Set up the tasks on the left and "
                "press <b>Start training</b>.</p></div>"
            )
            self.figures.object = ""
            self.progress.value = 0
            for plot in self._plots():
                plot.clear()
            return
        monitor = RunMonitor(self.state.lab.tracking, run_id)
        self.monitor = monitor
        self._busy = True

        def shown(curves: Any) -> None:
            self._busy = False
            if self.monitor is not monitor:
                return  # another run was picked meanwhile
            self._draw_all()
            self._render_run()

        def failed(exc: BaseException) -> None:
            self._busy = False
            self._say(describe_error(exc), error=True)

        self.ui.background(monitor.load, done=shown, failed=failed)

    def _plots(self) -> list[CurvePlot]:
        return [self.step_plot, *self.epoch_plots.values(), *self.other_plots.values()]

    def _split(self) -> list[tuple[CurvePlot, dict[str, Any]]]:
        """Each plot with the curves it draws: per step, then each per-epoch family."""
        curves = self.monitor.curves if self.monitor else {}
        steps = {k: v for k, v in curves.items() if k.startswith(STEP_PREFIX)}
        families: dict[str, dict[str, Any]] = {family: {} for family in EPOCH_FAMILIES}
        others: dict[str, dict[str, Any]] = {key: {} for key in self.other_plots}
        for key, series in curves.items():
            if key.startswith(EPOCH_PREFIXES):
                family = epoch_family(key)
                (others.setdefault(key, {}) if family == OTHER else families[family])[key] = series
        return (
            [(self.step_plot, steps)]
            + [(self.epoch_plots[family], found) for family, found in families.items()]
            + [(self._other_plot(key), found) for key, found in sorted(others.items())]
        )

    def _other_plot(self, key: str) -> CurvePlot:
        """The plot of one figure that shares no axis (made the first time it is logged)."""
        if key not in self.other_plots:
            plot = CurvePlot(f"{short(key)} per epoch", "epoch", f"train-epochs-{key}", 200)
            self.other_plots[key] = plot
            self.other_column.append(plot.pane)
        return self.other_plots[key]

    def _draw_all(self) -> None:
        started = self.monitor.started_ms if self.monitor else 0
        for plot, curves in self._split():
            smoothing = (self.smoothing.value or 0.0) if plot is self.step_plot else 0.0
            plot.show(curves, started, smoothing=smoothing, log=self.log_scale.value)

    def _restyle(self) -> None:
        if self.monitor is not None:
            self._draw_all()

    def poll(self) -> None:
        """New points of a live run, its progress, and the history (in a thread)."""
        self._polls += 1
        if not self.vm.has_model or self._busy:
            return
        monitor = self.monitor
        # live while the run is active, and until its final state has been shown once
        live = (
            monitor is not None
            and monitor.run is not None
            and (monitor.active or self._shown_status in ACTIVE)
        )
        if not live and self._polls % HISTORY_EVERY:
            return
        self._busy = True

        def work() -> tuple[Any, bool, bool, bool]:
            fresh = monitor.poll() if live and monitor is not None else {}
            history_changed = self._history_changed()
            config_changed = self.vm.refresh_config()
            plugins_changed = self.vm.plugins_changed()
            return fresh, history_changed, config_changed, plugins_changed

        def done(result: Any) -> None:
            self._busy = False
            fresh, history_changed, config_changed, plugins_changed = result
            if config_changed or plugins_changed:
                self._build_config()
            if monitor is not None and monitor is self.monitor and live:
                try:
                    self._stream(fresh)
                finally:
                    self._render_run()
            if history_changed:
                self._render_history()
                newest = self.vm.history[0] if self.vm.history else None
                # a run started elsewhere (CLI, a script, another session): follow it
                if (
                    newest
                    and newest.status in ACTIVE
                    and newest.run_id != self.vm.run_id
                    and not live
                ):
                    self.vm.run_id = newest.run_id
                self._preflight()

        def failed(exc: BaseException) -> None:
            self._busy = False
            self.status.object = error_banner(exc)

        self.ui.background(work, done=done, failed=failed)

    def _history_changed(self) -> bool:
        before = [(r.run_id, r.status, r.lineage_epochs) for r in self.vm.history]
        after = self.vm.refresh_history()
        return before != [(r.run_id, r.status, r.lineage_epochs) for r in after]

    def _stream(self, fresh: dict[str, Any]) -> None:
        if not fresh:
            return
        started = self.monitor.started_ms if self.monitor else 0
        for plot, curves in self._split():
            new = {k: v for k, v in fresh.items() if k in curves}
            if new:
                plot.extend(new, curves, started)

    def _render_run(self) -> None:
        monitor = self.monitor
        if monitor is None or monitor.run is None:
            return
        run = monitor.run
        f = monitor.figures()
        url = self.vm.run_url(run.info.run_id)
        link = (
            f" <a href='{esc(url)}' target='_blank' rel='noopener'>Open in MLflow ↗</a>"
            if url
            else ""
        )
        self.run_title.object = (
            f"<h3 class='al-h'>{esc(run.info.run_name)} {status_badge(f.status)}{link}</h3>"
        )
        self.progress.value = int(f.fraction * 1000)
        colors: dict[str, Any] = {"FAILED": "danger", "KILLED": "warning", "FINISHED": "success"}
        self.progress.bar_color = colors.get(f.status, "primary")
        arrow = {"falling": "↘ falling", "flat": "→ flat", "rising": "↗ rising"}.get(f.trend, "")
        parts = [
            f"<b>{f.fraction * 100:.0f}%</b>",
            f"epoch {f.epoch}/{f.target_epoch}" if f.target_epoch else f"epoch {f.epoch}",
            f"step {f.step} ({f.run_steps}/{f.total_steps or '?'} this run)",
            f"{f.steps_per_s:.1f} it/s" if f.steps_per_s else "",
            f"{f.samples_per_s:.0f} samples/s" if f.samples_per_s else "",
            f"ETA {duration(f.eta_s)}" if f.eta_s is not None and f.status in ACTIVE else "",
            f"elapsed {duration(f.elapsed_s)}",
            f"loss {fmt(f.current_loss)} (avg {fmt(f.average_loss)})"
            if f.current_loss is not None
            else "",
            arrow,
        ]  # fmt: skip
        text = " · ".join(esc(p) if not p.startswith("<b>") else p for p in parts if p)
        error = banner(f.error) if f.error else ""
        self.figures.object = f"<div class='al-progress-line'>{text}</div>{error}"
        active = f.status in ACTIVE
        self.stop_button.param.update(visible=active, disabled=False)
        ended = not active
        checkpoints = self.vm.checkpoints(run.info.run_id) if ended else []
        self.checkpoint.param.update(
            options=checkpoints[::-1], value=checkpoints[-1] if checkpoints else None,
            visible=bool(checkpoints),
        )  # fmt: skip
        self.continue_button.visible = bool(checkpoints)
        self.retry_button.visible = f.status in ("FAILED", "KILLED")
        if ended and self._stop_asked_for == run.info.run_id:
            self._stop_asked_for = None
            self._say(
                f"Run “{run.info.run_name}” {run_state(f.status)}; continue it from its checkpoint."
            )
        # a run without a logged model (log_model off) is told so when registered
        self.register_button.visible = self.alias.visible = f.status == "FINISHED"
        self._shown_status = f.status  # last: a render that failed half-way is tried again

    def _render_history(self) -> None:
        rows = []
        names = {h.run_id: h.name for h in self.vm.history}
        for r in self.vm.history:
            row = {
                "run": r.name,
                "status": run_state(r.status),
                "started": r.started.astimezone().strftime("%Y-%m-%d %H:%M") if r.started else "",
                "duration": duration(r.duration_s),
                "epochs": r.epochs,
                "from": names.get(r.parent_run, (r.parent_run or "")[:8]),
            }  # fmt: skip
            row.update({k: round(v, 4) for k, v in sorted(r.final_losses.items())})
            row["MLflow"] = self.vm.run_url(r.run_id) or ""
            row["open"] = "open ↗" if row["MLflow"] else ""
            row["run_id"] = r.run_id
            rows.append(row)
        # The same columns from the first render on (every task's loss, even before a run has
        # one): a change of columns rebuilds the table in the browser, and data sent to a table
        # still being built fails there (Tabulator's setData before its renderer exists).
        losses = {"total", *(t.name for t in self.vm.config.tasks)}
        losses |= {k for r in self.vm.history for k in r.final_losses}
        columns = [*HISTORY_FIRST_COLUMNS, *sorted(losses), "MLflow", "open", "run_id"]
        frame = pd.DataFrame(rows, columns=columns)
        # The history is re-read on every poll. Replacing the table re-renders it in the
        # browser, and a click landing during that re-render is lost: while the same runs keep
        # their statuses, only their changed cells (duration, epochs) are patched. A status
        # change, which is rare, replaces the table (once, under load, a finished run stayed
        # "training" in the browser after its status cell was patched).
        if self._patch_history(frame):
            return
        hidden = ["run_id", "open"] + ([] if any(r.get("MLflow") for r in rows) else ["MLflow"])
        # one message: hidden columns and data together (each alone re-renders the table)
        self.history.param.update(hidden_columns=hidden, value=frame)

    def _patch_history(self, frame: pd.DataFrame) -> bool:
        """Patch the shown history's changed cells; False when rows, columns or statuses
        differ."""
        shown = self.history.value
        if (
            shown is None
            or list(shown.columns) != list(frame.columns)
            or list(shown.get("run_id", [])) != list(frame.get("run_id", []))
            or list(shown.get("status", [])) != list(frame.get("status", []))
        ):
            return False
        changes: dict[str, list[tuple[int, Any]]] = {}
        for column in frame.columns:
            for row, (old, new) in enumerate(zip(shown[column], frame[column], strict=True)):
                if not (old == new or (pd.isna(old) and pd.isna(new))):
                    changes.setdefault(column, []).append((row, new))
        if changes:
            self.history.patch(changes, as_index=False)
        return True

    def _history_clicked(self, event: Any) -> None:
        frame = self.history.value
        if event.row is None or event.row >= len(frame) or event.column == "MLflow":
            return
        run_id = frame.iloc[event.row]["run_id"]
        if run_id != self.vm.run_id:
            self.vm.run_id = run_id

    def _csv(self) -> io.StringIO:
        """Every shown point of the run's curves."""
        out = io.StringIO()
        rows = self.monitor.rows() if self.monitor else []
        fields = ["run_id", "metric", "step", "value", "timestamp_ms", "elapsed_s"]
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        out.seek(0)
        if self.monitor and self.monitor.run is not None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            self.csv.filename = f"curves-{self.monitor.run_id[:8]}-{stamp}.csv"
        return out
