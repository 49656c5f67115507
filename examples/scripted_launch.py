"""Label, train and read the results from Python, the way a script on any machine would.

.venv/bin/python examples/scripted_launch.py            # embedded store (~/.activelab)
MLFLOW_TRACKING_URI=http://127.0.0.1:5000 .venv/bin/python examples/scripted_launch.py
"""

import numpy as np

import activelab
from activelab.tasks.datasets import Digits

model = activelab.create_model(description="Scripted: 100 random labels, 20 epochs")
truth = Digits().load().true_labels
chosen = np.random.default_rng(0).choice(len(truth), size=100, replace=False)
model.set_labels({int(i): int(truth[i]) for i in chosen})  # one change, undoable

run = activelab.launch(model, epochs=20, wait=True, progress=True)
metrics = run.metrics
print(f"{model.name}: run {run.run_id} {run.status}")
print(
    f"  loss {metrics['epoch/loss/total']:.3f}, "
    f"accuracy on held-out samples {metrics['eval/classification/unlabeled_accuracy']:.1%}"
)
print("  open the MLflow UI on the same store to see params, curves, images and the model")
