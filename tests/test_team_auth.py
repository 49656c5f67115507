"""A shared tracking server with MLflow's authentication: each person sees and changes only
what MLflow lets them, and a refusal says what permission to ask for."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from activelab import Lab
from activelab.cli.main import cli
from activelab.errors import PermissionDeniedError

pytestmark = pytest.mark.server


def _cli(auth_server, *args: str):
    return CliRunner().invoke(cli, ["--tracking-uri", auth_server.url, *args])


def test_a_model_is_read_and_changed_only_with_mlflow_s_permission(auth_server, unique):
    name = f"private {unique}"
    with auth_server.acting_as("alice"):
        model = Lab(auth_server.url).create_model(name)
        model.set_labels({0: 1, 1: 2})

    with auth_server.acting_as("bob"):
        lab = Lab(auth_server.url)
        # not listed, and refused by name or id with what to ask for
        assert name not in [card.name for card in lab.list_models()]
        for ref in (name, model.id):
            with pytest.raises(PermissionDeniedError, match="'bob' to read .* READ permission"):
                lab.get_model(ref)
        out = _cli(auth_server, "labels", "stats", name)
        assert out.exit_code == 1
        assert "does not allow user 'bob' to read" in out.output
        assert "Traceback" not in out.output

    auth_server.grant(model.id, "bob", "READ")
    with auth_server.acting_as("bob"):
        readable = Lab(auth_server.url).get_model(name)
        assert readable.labels.as_dict() == {0: 1, 1: 2}
        with pytest.raises(PermissionDeniedError, match="change this model's labels.*EDIT"):
            readable.set_labels({2: 3})
        out = _cli(auth_server, "labels", "set", name, "5", "1")
        assert out.exit_code == 1 and "EDIT permission" in out.output
        with pytest.raises(PermissionDeniedError, match="train the model.*EDIT"):
            readable.launch(epochs=1)

    with auth_server.acting_as("alice"):  # nothing changed by the refused attempts
        owned = Lab(auth_server.url).get_model(name)
        assert owned.labels.as_dict() == {0: 1, 1: 2}
        assert owned.runs() == []

    auth_server.grant(model.id, "bob", "EDIT")
    with auth_server.acting_as("bob"):
        Lab(auth_server.url).get_model(name).set_labels({2: 3})
    with auth_server.acting_as("alice"):
        assert Lab(auth_server.url).get_model(name).labels.as_dict() == {0: 1, 1: 2, 2: 3}


def test_wrong_or_missing_credentials_say_how_to_log_in(auth_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not bob's password")
    with pytest.raises(PermissionDeniedError, match="MLFLOW_TRACKING_PASSWORD"):
        Lab(auth_server.url).list_models()
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    out = _cli(auth_server, "models", "list")
    assert out.exit_code == 1 and "MLFLOW_TRACKING_USERNAME" in out.output
