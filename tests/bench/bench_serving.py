"""The trained model where MLflow users use models: load, predict, serve.

An image-folder model (hard digits, 28x28, written by the bench) trains one epoch, logs its
model and is registered as `NAME@champion`; then:

- `pyfunc_load_s`: `mlflow.pyfunc.load_model("models:/NAME@champion")` in this process
  (median of 3);
- `pyfunc_predict_1000_ms`: `predict` on 1,000 images (N, 1, 28, 28), median of 5, and
  `pyfunc_overhead_ratio`: that over the same network's plain torch forward pass (the eager
  module from the run's checkpoint, `torch.no_grad`, same threads), measured in the same run;
- `serve_invocations_p95_ms`: `mlflow models serve --env-manager local` on 127.0.0.1, 200
  requests of 32 images each as JSON `{"inputs": ...}`, p95 of the round trip.

Targets (issue 32): pyfunc_overhead_ratio <= 3, serve_invocations_p95_ms <= 200.

    .venv/bin/python tests/bench/bench_serving.py [--requests 200]

The last line printed is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hard_digits import write_folder

THREADS = 2


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def train_and_register(root: Path):
    from activelab import Lab

    folder = root / "images"
    write_folder(folder, variants=2, limit=600)  # 1,200 images in class folders
    lab = Lab(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", home=root / "home")
    model = lab.create_model(
        "served-digits", dataset="image-folder", config={"dataset.path": str(folder)}
    )
    from activelab.tasks.image_cache import list_folder

    truth = list_folder(folder).targets
    model.set_labels({i: int(truth[i]) for i in range(0, len(truth), 24)})  # 50 labels
    handle = model.launch(epochs=1, system_metrics=False, in_process=True)
    assert handle.wait(timeout=1800) == "FINISHED", handle.summary.error
    made = model.register(alias="champion")
    return lab, model, made, handle.run_id


def eager_network(model, run_id: str):
    """The same network as a plain torch module, from the run's last checkpoint."""
    import torch

    from activelab.runs import resolve_checkpoint
    from activelab.runtime import build_tasks, build_trainer

    config, host = model.config, model.lab.plugins
    trainer = build_trainer(config, host)
    info = model.dataset_info
    tasks = build_tasks(config, host, info)
    _run, path = resolve_checkpoint(model.lab.tracking, run_id, model.id)
    with tempfile.TemporaryDirectory() as folder:
        local = model.lab.tracking.download_run_artifact(run_id, path, folder)
        state = torch.load(local, weights_only=True, map_location="cpu")
    return trainer.load_model(info, tasks, state)


def serve_p95(uri: str, tracking_uri: str, images: np.ndarray, requests: int) -> float:
    from activelab.mlflow_server import free_port

    bin_dir = Path(sys.executable).parent
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    command = [str(bin_dir / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port), "-w", "1"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow models serve did not come up within 180 s")
            time.sleep(0.2)  # a poll interval, bounded by the deadline
        times = []
        for i in range(requests + 5):
            batch = images[(i * 32) % (len(images) - 32) :][:32]
            body = json.dumps({"inputs": batch.tolist()}).encode()
            request = urllib.request.Request(
                url + "/invocations", data=body, headers={"Content-Type": "application/json"}
            )
            start = time.perf_counter()
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
            if i >= 5:  # the first requests warm the server up
                times.append((time.perf_counter() - start) * 1000)
            assert len(answer["predictions"]) == 32
        return percentile(times, 95)
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    import mlflow.pyfunc
    import torch

    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        lab, model, made, run_id = train_and_register(Path(tmp))
        os.environ["MLFLOW_TRACKING_URI"] = lab.settings.tracking_uri
        loads = []
        for _ in range(3):
            start = time.perf_counter()
            served = mlflow.pyfunc.load_model(made.uri)
            loads.append(time.perf_counter() - start)
        rng = np.random.default_rng(0)
        images = (
            model.lab.plugins.get("datasets", "image-folder")(**model.config.dataset_params)
            .load()
            .images
        )
        batch = images[rng.choice(len(images), 1000, replace=False)]
        network = eager_network(model, run_id)
        tensor = torch.from_numpy(batch)

        def plain() -> None:
            with torch.no_grad():
                network(tensor)

        served.predict(batch)  # warm-up of both
        plain()
        pyfunc_ms = median_ms(lambda: served.predict(batch), 5)
        plain_ms = median_ms(plain, 5)
        agree = float(
            (served.predict(batch)["predicted"].to_numpy()
             == np.asarray(model.dataset_info.classes, dtype=object)[
                 network(tensor)[:, -len(model.dataset_info.classes):].argmax(1).numpy()]).mean()
        )  # fmt: skip
        p95 = serve_p95(made.uri, lab.settings.tracking_uri, batch, args.requests)
    figures = {
        "pyfunc_load_s": round(statistics.median(loads), 3),
        "pyfunc_predict_1000_ms": round(pyfunc_ms, 1),
        "plain_torch_1000_ms": round(plain_ms, 1),
        "pyfunc_overhead_ratio": round(pyfunc_ms / plain_ms, 2),
        "pyfunc_agrees_with_torch": round(agree, 4),
        "serve_invocations_p95_ms": round(p95, 1),
        "serve_requests": args.requests,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    print(f"pyfunc load {figures['pyfunc_load_s']} s; 1,000 images {pyfunc_ms:.0f} ms "
          f"(plain torch {plain_ms:.0f} ms, x{figures['pyfunc_overhead_ratio']}); "
          f"serve p95 {p95:.0f} ms for 32 images")  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
