"""Home: the model cards, creating, renaming, deleting (with undo), quick start, activity."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import panel as pn

from activelab.panel_app.pages.common import (
    Page,
    banner,
    duration,
    esc,
    fmt,
    note,
    relative_time,
    status_badge,
)
from activelab.panel_app.vm.home import HomeViewModel, describe_error
from activelab.panel_app.vm.state import AppState

REFRESH_MS = 4000


def dataset_html(card: Any) -> str:
    """The data set, its size and, for a folder, which folder (its end; the whole on hover)."""
    size = f" · {card.samples:,} samples" if card.samples else ""
    if not card.source:
        return f"{esc(card.dataset)}{size}"
    tail = card.source.rstrip("/").rsplit("/", 2)
    short = "…/" + "/".join(tail[-2:]) if len(tail) > 2 else card.source
    return f"{esc(card.dataset)}{size}<br><span title='{esc(card.source)}'>{esc(short)}</span>"


def registered_html(card: Any) -> str:
    """The model's last version in MLflow's Model Registry, with what loads it."""
    made = card.registered
    if made is None:
        return ""
    alias = f" @{made.alias}" if made.alias else ""
    return (
        f"<span>registered</span><span class='v' title='{esc(made.uri)}'>"
        f"version {esc(made.version)}{esc(alias)}</span>"
    )


def accuracy_html(card: Any) -> str:
    """The latest accuracy on the samples nobody labeled, and a sparkline of its last epochs
    (trusted numbers only: the tag was parsed into floats)."""
    if card.latest_accuracy is None:
        return "-"
    points = card.accuracy_trend
    spark = ""
    if len(points) >= 2:
        low, high = min(points), max(points)
        span = (high - low) or 1.0
        step = 60 / (len(points) - 1)
        xy = " ".join(
            f"{i * step:.1f},{14 - 12 * (v - low) / span:.1f}" for i, v in enumerate(points)
        )
        spark = (
            "<svg class='al-spark' width='62' height='16' viewBox='-1 0 62 16'>"
            f"<polyline points='{xy}' fill='none' stroke='#2f9e44' stroke-width='1.5'/></svg>"
        )
    return f"{spark}{100 * card.latest_accuracy:.0f} %"


class HomePage(Page):
    poll_ms = REFRESH_MS

    def __init__(self, state: AppState, **params: Any) -> None:
        super().__init__(state, **params)
        self.vm = HomeViewModel(state)
        self._card_views: dict[str, tuple[Any, Any]] = {}  # model id -> (card, its text)
        self._latest: dict[str, Any] = {}  # model id -> the card data last shown

        self.search = pn.widgets.TextInput(placeholder="Search by name, data set or tag", width=260)
        self.search.param.watch(lambda e: setattr(self.vm, "query", e.new), "value_input")
        self.new_button = pn.widgets.Button(label="New model", color="primary")
        self.quick_button = pn.widgets.Button(label="Quick start", color="success")
        self.new_button.on_click(lambda e: self._open_create())
        self.quick_button.on_click(lambda e: self._quick_start())
        self.banner = pn.Row(visible=False, sizing_mode="stretch_width")
        # cards of one row share its height (a card's own content sets only its minimum)
        self.cards = pn.FlexBox(gap="12px", align_items="stretch", sizing_mode="stretch_width")
        self.activity = pn.pane.HTML("", sizing_mode="stretch_width")
        self.system = pn.pane.HTML("", sizing_mode="stretch_width")
        self.create_dialog, self.rename_dialog, self.delete_dialog = self._dialogs()
        self.vm.param.watch(
            lambda *e: self._render(),
            ["cards", "query", "recent_runs", "system", "error", "loaded"],
        )

    # --- layout -------------------------------------------------------------------------------

    def __panel__(self) -> pn.viewable.Viewable:
        header = pn.Row(
            pn.pane.HTML("<h2 style='margin:4px 0'>Models</h2>"),
            pn.Spacer(width=12),
            self.search,
            self.new_button,
            self.quick_button,
            sizing_mode="stretch_width",
            styles={"flex-wrap": "wrap", "align-items": "center"},
        )
        side = pn.Column(
            pn.pane.HTML("<h3 style='margin:8px 0 4px'>Recent activity</h3>"),
            self.activity,
            pn.pane.HTML("<h3 style='margin:16px 0 4px'>System</h3>"),
            self.system,
            width=320,
            styles={"flex-shrink": "0"},
        )
        body = pn.FlexBox(
            pn.Column(
                self.banner,
                self.cards,
                sizing_mode="stretch_width",
                styles={"flex": "1 1 480px", "min-width": "300px"},
            ),
            side,
            gap="16px",
            sizing_mode="stretch_width",
        )
        return pn.Column(
            header,
            body,
            self.create_dialog,
            self.rename_dialog,
            self.delete_dialog,
            sizing_mode="stretch_width",
        )

    def shown(self) -> None:
        self._render_now()
        self.ui.background(self.vm.refresh)

    def poll(self) -> None:
        self.ui.background(self.vm.refresh)

    # --- rendering ----------------------------------------------------------------------------

    def _render(self) -> None:
        # A refresh that lands after the page was left would update detached views.
        if self.active:
            self.ui.call(self._render_now)

    def _render_now(self) -> None:
        cards = self.vm.visible_cards
        if not self.vm.loaded:
            self.cards[:] = [pn.indicators.LoadingSpinner(value=True, size=40)]
        elif self.vm.error and not self.vm.cards:
            self.cards[:] = [pn.pane.HTML(banner(self.vm.error))]
        elif not self.vm.cards:
            self.cards[:] = [self._empty_state()]
        elif not cards:
            self.cards[:] = [
                pn.pane.HTML(f"<p class='al-muted'>No model matches “{esc(self.vm.query)}”.</p>")
            ]
        else:
            self._show_cards(cards)
        self.activity.object = self._activity_html()
        self.system.object = self._system_html()

    def _empty_state(self) -> pn.viewable.Viewable:
        first = pn.widgets.Button(label="Create your first model", color="primary")
        quick = pn.widgets.Button(label="Quick start on digits", color="success")
        first.on_click(lambda e: self._open_create())
        quick.on_click(lambda e: self._quick_start())
        return pn.Column(
            pn.pane.HTML(
                "<div class='al-empty'><h3>No models yet</h3><p>A model is an MLflow experiment "
                "that owns its labels, training runs and checkpoints.<br>Create one, or let "
                "<b>Quick start</b> make a <i>digits</i> model with a few labels and train it "
                "for a minute.</p></div>",
                sizing_mode="stretch_width",
            ),
            pn.Row(first, quick),
            sizing_mode="stretch_width",
        )

    def _show_cards(self, cards: list[Any]) -> None:
        """Cards are kept per model and only their text is updated: a refresh never replaces a
        button under a person's click (a rebuilt card swallowed clicks on Open)."""
        self._latest = {c.id: c for c in cards}
        views = []
        for card in cards:
            if card.id not in self._card_views:
                self._card_views[card.id] = self._card(card.id)
            view, text = self._card_views[card.id]
            html = self._card_html(card)
            if text.object != html:
                text.object = html
            views.append(view)
        for gone in set(self._card_views) - set(self._latest):
            del self._card_views[gone]
        if list(self.cards) != views:
            self.cards[:] = views

    def _card(self, card_id: str) -> tuple[pn.viewable.Viewable, pn.pane.HTML]:
        text = pn.pane.HTML("", sizing_mode="stretch_width")
        open_button = pn.widgets.Button(label="Open", color="primary", width=70)
        rename_button = pn.widgets.Button(label="Rename", width=80)
        # quieter than Open, and it asks first (the dialog says what goes, and Undo)
        delete_button = pn.widgets.Button(label="Delete…", color="light", width=80)
        open_button.on_click(lambda e: self.state.open_model(card_id))
        rename_button.on_click(lambda e: self._open_rename(self._latest[card_id]))
        delete_button.on_click(lambda e: self._open_delete(self._latest[card_id]))
        view = pn.Column(
            text,
            pn.Row(open_button, rename_button, delete_button),
            css_classes=["al-card"],
            width=300,
            name=f"card-{card_id}",
        )
        return view, text

    def _card_html(self, card: Any) -> str:
        tags = "".join(
            f"<span class='al-tag'>{esc(k)}={esc(v)}</span>" for k, v in card.tags.items()
        )
        description = (
            f"<div class='al-muted'>{esc(card.description)}</div>" if card.description else ""
        )
        status = card.latest_run_status if card.latest_run_status == "RUNNING" else None
        html = (
            f"<h3>{esc(card.name)} {status_badge(status)}</h3>{description}"
            "<div class='al-figures'>"
            f"<span>data set</span><span class='v'>{dataset_html(card)}</span>"
            f"<span>labeled</span><span class='v'>{card.labeled_count}</span>"
            f"<span>epochs</span><span class='v'>{card.total_epochs}</span>"
            f"<span>latest loss</span><span class='v'>{fmt(card.latest_loss)}</span>"
            f"<span>accuracy</span><span class='v'>{accuracy_html(card)}</span>"
            f"<span>modified</span><span class='v'>{relative_time(card.updated)}</span>"
            f"{registered_html(card)}</div>{tags}"
        )
        return html

    def _activity_html(self) -> str:
        if not self.vm.recent_runs:
            return "<p class='al-muted'>No training runs yet.</p>"
        rows = "".join(self._activity_row(model, run) for model, run in self.vm.recent_runs)
        return f"<table class='al-activity'>{rows}</table>"

    @staticmethod
    def _activity_row(model: str, run: Any) -> str:
        """One run: its name linking to its model's Train page (the model is named too when
        the run's name does not say it), status, and when."""
        name = run.name.split(" · ")[0]
        shown = name if name.startswith(model) else f"{model} / {name}"
        link = f"?page=train&model={quote(run.experiment_id)}"
        return (
            f"<tr><td><a href='{esc(link)}'>{esc(shown)}</a></td>"
            f"<td>{status_badge(run.status)}</td><td class='al-muted'>"
            f"{relative_time(run.started)} · {duration(run.duration_s)}</td></tr>"
        )

    def _system_html(self) -> str:
        s = self.vm.system
        if not s:
            return ""
        gpus = (
            "".join(
                f"<div>GPU {esc(g.get('name'))}: {g.get('util_percent', '-')} %</div>"
                for g in s.get("gpus", [])
            )
            or "<div class='al-muted'>no GPU</div>"
        )
        return (
            f"<div class='al-kv'><div><b>CPU</b>{s['cpu_percent']:.0f} % of {s['cpus']} cores"
            f"</div><div><b>Memory</b>{s['memory_used_gb']} / {s['memory_total_gb']} GB "
            f"({s['memory_percent']:.0f} %)</div>{gpus}</div>"
        )

    # --- dialogs --------------------------------------------------------------------------------

    def _dialogs(self) -> tuple[pn.Modal, pn.Modal, pn.Modal]:
        self.f_name = pn.widgets.TextInput(label="Name", placeholder="model-001 if empty")
        self.f_description = pn.widgets.TextAreaInput(
            label="Description (shown in MLflow)", height=70
        )
        self.f_preset = pn.widgets.Select(label="Preset", options=self.vm.presets, value="default")
        self.f_dataset = pn.widgets.Select(
            label="Data set", options=self.vm.datasets, value="digits"
        )
        self.f_path = pn.widgets.TextInput(
            label="Image folder", placeholder="/path/to/images", visible=False
        )
        self.f_dataset.param.watch(
            lambda e: setattr(self.f_path, "visible", e.new == "image-folder"), "value"
        )
        self.f_error = pn.pane.HTML("")
        create = pn.widgets.Button(label="Create", color="primary")
        create.on_click(lambda e: self._create())
        create_dialog = pn.Modal(
            pn.pane.HTML("<h3>New model</h3>"),
            self.f_name,
            self.f_description,
            self.f_preset,
            self.f_dataset,
            self.f_path,
            self.f_error,
            create,
            width=380,
        )

        self.r_name = pn.widgets.TextInput(label="New name")
        self.r_error = pn.pane.HTML("")
        save = pn.widgets.Button(label="Save name", color="primary")
        save.on_click(lambda e: self._rename())
        rename_dialog = pn.Modal(
            pn.pane.HTML("<h3>Rename model</h3>"), self.r_name, self.r_error, save, width=340
        )

        self.d_text = pn.pane.HTML("")
        confirm = pn.widgets.Button(label="Delete model", color="danger")
        cancel = pn.widgets.Button(label="Cancel")
        confirm.on_click(lambda e: self._delete())
        cancel.on_click(lambda e: self.delete_dialog.hide())
        delete_dialog = pn.Modal(self.d_text, pn.Row(confirm, cancel), width=380)
        self._target: Any = None
        return create_dialog, rename_dialog, delete_dialog

    def _open_create(self) -> None:
        from activelab.panel_app.pages.settings import load_preferences

        prefs = load_preferences(self.state)
        self.f_name.value = ""
        self.f_description.value = ""
        self.f_error.object = ""
        self.f_dataset.options = self.vm.datasets
        if prefs.get("dataset") in self.f_dataset.options:
            self.f_dataset.value = prefs["dataset"]
        if prefs.get("preset") in self.f_preset.options:
            self.f_preset.value = prefs["preset"]
        self.create_dialog.show()

    def _create(self) -> None:
        params = {"path": self.f_path.value} if self.f_dataset.value == "image-folder" else {}
        try:
            card = self.vm.create(
                self.f_name.value or "",
                self.f_description.value or "",
                self.f_preset.value,
                self.f_dataset.value,
                params,
            )
        except Exception as exc:
            self.f_error.object = note(describe_error(exc), ok=False)
            return
        self.create_dialog.hide()
        self.state.notify(f"Created model “{card.name}”: label a few samples here.", "success")
        self.state.open_model(card.id)  # what comes next: labeling it

    def _open_rename(self, card: Any) -> None:
        self._target = card
        self.r_name.value = card.name
        self.r_error.object = ""
        self.rename_dialog.show()

    def _rename(self) -> None:
        try:
            card = self.vm.rename(self._target.id, self.r_name.value or "")
        except Exception as exc:
            self.r_error.object = note(describe_error(exc), ok=False)
            return
        self.rename_dialog.hide()
        self.state.notify(f"Renamed to “{card.name}”.", "success")

    def _open_delete(self, card: Any) -> None:
        self._target = card
        self.d_text.object = (
            f"<h3>Delete “{esc(card.name)}”?</h3><p>Its labels, runs and "
            "checkpoints are kept; you can restore it right after.</p>"
        )
        self.delete_dialog.show()

    def _delete(self) -> None:
        card = self._target
        self.delete_dialog.hide()
        try:
            self.vm.delete(card.id)
        except Exception as exc:
            self.state.notify(describe_error(exc), "error")
            return
        undo = pn.widgets.Button(label="Undo", color="primary", width=80)
        close = pn.widgets.Button(label="✕", width=40)
        undo.on_click(lambda e: self._restore(card))
        close.on_click(lambda e: setattr(self.banner, "visible", False))
        self.banner[:] = [
            pn.pane.HTML(f"<div class='al-banner'>Deleted “{esc(card.name)}”.</div>"),
            undo,
            close,
        ]
        self.banner.visible = True

    def _restore(self, card: Any) -> None:
        self.banner.visible = False
        try:
            restored = self.vm.restore(card.id)
        except Exception as exc:
            self.state.notify(describe_error(exc), "error")
            return
        self.state.notify(f"Restored “{restored.name}”.", "success")

    def _quick_start(self) -> None:
        self.quick_button.disabled = True
        self.state.notify("Quick start: creating a digits model and starting a short training…")

        def done(result: Any) -> None:
            card, _run_id = result
            self.quick_button.disabled = False
            self.state.notify(
                f"“{card.name}” is training; its map updates when the run ends.", "success"
            )
            self.state.open_model(card.id, "label")

        def failed(exc: BaseException) -> None:
            self.quick_button.disabled = False
            self.state.notify(describe_error(exc), "error")

        self.ui.background(self.vm.quick_start, done, failed)
