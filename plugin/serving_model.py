"""The logged model's pyfunc: what `mlflow.pyfunc.load_model` and `mlflow models serve` run.

MLflow stores this file beside the network and runs it to load the model ("models from
code"): it imports nothing of activelab, so the model loads wherever torch, numpy, pandas,
Pillow and MLflow are installed. Two artifacts come with it: `network` (the trained network,
exported with `torch.export`: no pickle) and `spec` (a JSON file: image shape, class names,
how integer pixels scale, and the network's output layout).

Input, any of:
- images as an array `(N, H, W)` (one channel), `(N, C, H, W)`, `(N, H, W, C)` or flat
  `(N, C*H*W)`; floats are taken as the model's pixels (0-1), integers are scaled like the
  data set's (0-255 for image files);
- a DataFrame of flat pixels (one column per pixel);
- image file paths: a list, a Series, or a DataFrame with one column of paths (each read and
  resized the way the data set reads its files).

Output: a DataFrame with `predicted` (the class name), `certainty`, `p_<class>` per class,
the labeling map's `map_x`, `map_y` and the latent `latent_0...`.
"""

import json
from typing import Any

import mlflow.models
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

CHUNK = 1024  # images per forward pass: bounded memory for large inputs


def output_columns(spec: dict[str, Any]) -> list[str]:
    """The output DataFrame's columns, in order (the signature names the same)."""
    classes = [str(name) for name in spec["classes"]] if spec["probabilities"] else []
    columns = ["predicted", "certainty"] if classes else []
    columns += [f"p_{name}" for name in classes]
    columns += ["map_x", "map_y"][: spec["map"]]
    columns += [f"latent_{i}" for i in range(spec["latent"])]
    return columns


def accepted_inputs(spec: dict[str, Any]) -> str:
    c, h, w = spec["image_shape"]
    shapes = f"(N, {c}, {h}, {w}), (N, {h}, {w}, {c}), flat (N, {c * h * w})"
    if c == 1:
        shapes = f"(N, {h}, {w}), " + shapes
    return (
        f"images as an array {shapes}, a DataFrame of {c * h * w} pixel columns, or image "
        f"file paths (a list, or a DataFrame with one column of paths)"
    )


def read_files(paths: list[str], spec: dict[str, Any]) -> np.ndarray:
    """uint8 pixels of image files, converted and resized as the data set does."""
    from PIL import Image

    c, h, w = spec["image_shape"]
    pixels = np.empty((len(paths), c, h, w), dtype=np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            picture = np.asarray(image.convert("L" if c == 1 else "RGB").resize((w, h)))
        pixels[i] = picture[None] if c == 1 else picture.transpose(2, 0, 1)
    return pixels


def as_paths(model_input: Any) -> list[str] | None:
    """The file paths in `model_input`, or None when it is not a set of paths."""
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] != 1 or pd.api.types.is_numeric_dtype(model_input.iloc[:, 0]):
            return None
        model_input = model_input.iloc[:, 0]
    if isinstance(model_input, (pd.Series, np.ndarray)):
        if model_input.ndim != 1 or pd.api.types.is_numeric_dtype(model_input.dtype):
            return None
        model_input = model_input.tolist()
    is_list = isinstance(model_input, (list, tuple)) and len(model_input) > 0
    if is_list and all(isinstance(item, str) for item in model_input):
        return list(model_input)
    return None


def as_images(model_input: Any, spec: dict[str, Any]) -> np.ndarray:
    """float32 images (N, C, H, W) of whatever form `model_input` has; ValueError otherwise."""
    c, h, w = spec["image_shape"]
    paths = as_paths(model_input)
    if paths is not None:
        pixels: np.ndarray = read_files(paths, spec)
    else:
        if isinstance(model_input, pd.DataFrame):
            model_input = model_input.to_numpy()
        try:
            pixels = np.asarray(model_input)
        except (TypeError, ValueError):
            pixels = np.empty(0, dtype=object)
        shape = pixels.shape
        if pixels.dtype.kind not in "fiub":
            pixels = np.empty((0,), dtype=object)  # refused below
        elif pixels.ndim == 2 and shape[1] == c * h * w:
            pixels = pixels.reshape(-1, c, h, w)
        elif pixels.ndim == 3 and c == 1 and shape[1:] == (h, w):
            pixels = pixels[:, None]
        elif pixels.ndim == 4 and shape[1:] == (h, w, c) and shape[1:] != (c, h, w):
            pixels = pixels.transpose(0, 3, 1, 2)
        if pixels.ndim != 4 or pixels.shape[1:] != (c, h, w) or len(pixels) == 0:
            got = f"{type(model_input).__name__} of shape {shape}" if shape else "this input"
            raise ValueError(f"The model cannot read {got}. It takes {accepted_inputs(spec)}.")
    if pixels.dtype.kind in "iub" and pixels.dtype != np.bool_:
        return (pixels.astype(np.float32) / np.float32(spec["pixel_max"])).clip(0.0, 1.0)
    return pixels.astype(np.float32, copy=False)


def frame_of(outputs: np.ndarray, spec: dict[str, Any]) -> pd.DataFrame:
    """The network's (N, map + latent + classes) outputs as the named DataFrame."""
    n_map, n_latent, n_classes = spec["map"], spec["latent"], spec["probabilities"]
    map_part = outputs[:, :n_map]
    latent = outputs[:, n_map : n_map + n_latent]
    columns: dict[str, Any] = {}
    if n_classes:
        probabilities = outputs[:, n_map + n_latent :]
        classes = np.asarray([str(name) for name in spec["classes"]], dtype=object)
        columns["predicted"] = classes[probabilities.argmax(axis=1)]
        columns["certainty"] = probabilities.max(axis=1)
        for k, name in enumerate(classes):
            columns[f"p_{name}"] = probabilities[:, k]
    for i, name in enumerate(["map_x", "map_y"][:n_map]):
        columns[name] = map_part[:, i]
    for i in range(n_latent):
        columns[f"latent_{i}"] = latent[:, i]
    return pd.DataFrame(columns)


class ActivelabImageModel(PythonModel):
    """The trained network behind a forgiving input and a named output."""

    def load_context(self, context: Any) -> None:
        import torch

        with open(context.artifacts["spec"], encoding="utf-8") as file:
            self.spec = json.load(file)
        self.network = torch.export.load(context.artifacts["network"]).module()

    # `model_input` may be any of the forms above; MLflow reads the hint as a schema unless it
    # is an ndarray (or a DataFrame), and warns about `Any` or no hint
    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> pd.DataFrame:
        import torch

        images = as_images(model_input, self.spec)
        parts = []
        with torch.no_grad():
            for start in range(0, len(images), CHUNK):
                batch = torch.from_numpy(np.ascontiguousarray(images[start : start + CHUNK]))
                parts.append(self.network(batch).float().numpy())
        return frame_of(np.concatenate(parts), self.spec)


mlflow.models.set_model(ActivelabImageModel())
