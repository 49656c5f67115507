"""The model a page's view-model works on, once the page has loaded one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from activelab.errors import ModelNotFoundError

if TYPE_CHECKING:
    from activelab.models import Model


class LoadedModel:
    """`model` is the loaded model; before `load`, reading it is a clear error, not a None
    that fails later. `has_model` says whether one is loaded."""

    _model: Model | None = None

    @property
    def has_model(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Model:
        if self._model is None:
            raise ModelNotFoundError("No model is open: pick one on the Home page.")
        return self._model

    @model.setter
    def model(self, model: Model | None) -> None:
        self._model = model
