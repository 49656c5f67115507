"""The trained network as an MLflow pyfunc model that takes what people have.

`log_serving_model` exports the network with `torch.export` (no pickle), writes the spec the
pyfunc reads (image shape, class names, pixel scale, output layout) and logs both with
`serving_model.py`, the model's code, which MLflow stores beside them. The signature names
every output column; the input has none, so MLflow passes any form of input through and the
model itself says which forms it takes.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from activelab.dataset import DataBundle

CODE = Path(__file__).with_name("serving_model.py")
# what the model's own code imports (MLflow adds itself)
SERVING_PACKAGES = ("torch", "numpy", "pandas", "pillow")
MAX_BATCH = 2**20  # the exported network's batch dimension is dynamic up to this


def spec_of(module: Any, data: DataBundle, example: np.ndarray) -> dict[str, Any]:
    """What the pyfunc needs to read inputs and name outputs."""
    import torch

    with torch.no_grad():
        width = int(module(torch.from_numpy(example)).shape[1])
    layout = module.output_layout() if hasattr(module, "output_layout") else None
    if layout is None:  # a plugin's network: its outputs are named latent_<i>
        layout = {"map": 0, "latent": width}
    classes = [str(name) for name in data.info.classes]
    probabilities = width - layout["map"] - layout["latent"]
    if probabilities not in (0, len(classes)):
        probabilities, layout = 0, {"map": 0, "latent": width}  # not one column per class
    return {
        "image_shape": [int(side) for side in data.info.image_shape],
        "classes": classes,
        "pixel_max": float(data.pixel_max),
        "map": layout["map"],
        "latent": layout["latent"],
        "probabilities": probabilities,
        "dataset": data.info.kind,
    }


def signature_of(spec: dict[str, Any]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    from activelab.serving_model import output_columns

    columns: list[ColSpec | TensorSpec] = [
        ColSpec("string" if name == "predicted" else "float", name) for name in output_columns(spec)
    ]
    return ModelSignature(inputs=None, outputs=Schema(columns))


def description(spec: dict[str, Any]) -> str:
    """Markdown for the MLflow UI: what the model takes and gives."""
    from activelab.serving_model import accepted_inputs

    c, h, w = spec["image_shape"]
    classes = ", ".join(f"`{name}`" for name in spec["classes"][:20])
    more = " ..." if len(spec["classes"]) > 20 else ""
    gives = (
        f"`predicted` (the class name: {classes}{more}), `certainty`, `p_<class>` per class, "
        if spec["probabilities"]
        else ""
    )
    return (
        f"Takes {accepted_inputs(spec)}. Float pixels are read as 0-1; integer pixels are "
        f"divided by {spec['pixel_max']:g}; files are converted to "
        f"{'gray' if c == 1 else 'RGB'} and resized to {w}x{h}. Gives a table: {gives}"
        f"the labeling map (`map_x`, `map_y`) and the latent (`latent_0` ...). "
        "Load it with `mlflow.pyfunc.load_model(...).predict(images)`, or serve it with "
        "`mlflow models serve -m models:/NAME@ALIAS --env-manager local`."
    )


def export_network(module: Any, example: np.ndarray, path: Path) -> None:
    """The network as a `torch.export` program with a dynamic batch size."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(
        module, (torch.from_numpy(example),), dynamic_shapes=({0: batch},)
    )
    torch.export.save(program, str(path))


def log_serving_model(
    model_id: str, run_id: str, module: Any, spec: dict[str, Any], example: np.ndarray
) -> Any:
    """Log `module` (in eval mode, on the CPU; `spec` from `spec_of`) as the logged model
    `model_id` of `run_id`."""
    import mlflow.pyfunc
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="activelab-model-") as folder:
        network, spec_file = Path(folder) / "network.pt2", Path(folder) / "spec.json"
        export_network(module, example, network)
        spec_file.write_text(json.dumps(spec, indent=1), encoding="utf-8")
        return Model.log(
            artifact_path=None, model_id=model_id, run_id=run_id, flavor=mlflow.pyfunc,
            python_model=str(CODE), artifacts={"network": str(network), "spec": str(spec_file)},
            signature=signature_of(spec), input_example=example,
            pip_requirements=requirements(), metadata={"activelab": spec},
        )  # fmt: skip


def requirements() -> list[str]:
    """Pinned, so logging skips MLflow's requirement inference (~7 s, DESIGN.md)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in SERVING_PACKAGES:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins
