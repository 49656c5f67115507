"""Every `activelab.*` tag and param key, in one place (as MLflow does in mlflow_tags.py).

`mlflow.*` keys are MLflow's own and are imported from MLflow where they are used.
"""

PREFIX = "activelab."

# --- experiment (model) tags -----------------------------------------------------------------
MODEL_MARKER = "activelab.model"  # "1" on every experiment that is an activelab model
CONFIG = "activelab.config"  # JSON: preset, dataset, trainer, tasks
PRESET = "activelab.preset"
DATASET = "activelab.dataset"  # data set name, for filtering without parsing the config
DATASET_INFO = "activelab.dataset_info"  # JSON: size, classes, image shape
CREATED_WITH = "activelab.created_with"  # activelab version that created the model
DELETED_NAME = "activelab.deleted_name"  # the name a soft-deleted model had

# card figures, kept in step so the home page is one search_experiments call
LABELED_COUNT = "activelab.labeled_count"
TOTAL_EPOCHS = "activelab.total_epochs"
LATEST_LOSS = "activelab.latest_loss"
# the classifier's accuracy on the samples nobody labeled, and its last epochs (comma list)
LATEST_ACCURACY = "activelab.latest_accuracy"
ACCURACY_TREND = "activelab.accuracy_trend"
UPDATED_AT = "activelab.updated_at"  # epoch milliseconds of the last change of any kind
LATEST_RUN = "activelab.latest_run"  # run id of the newest training run
LATEST_RUN_STATUS = "activelab.latest_run_status"
RUN_COUNT = "activelab.run_count"  # training runs launched so far (numbers readable run names)
# JSON: the model's last version registered in MLflow's Model Registry (name, version, alias, run)
REGISTERED = "activelab.registered"

# --- run tags --------------------------------------------------------------------------------
RUN_KIND = "activelab.run_kind"  # "train" | "eval"
RUN_VERSION = "activelab.version"  # activelab version that ran the run
LABELS_DIGEST = "activelab.labels_digest"
RUN_LABELED_COUNT = "activelab.labeled_count"
STOP_REQUESTED = "activelab.stop_requested"
HEARTBEAT = "activelab.heartbeat"  # epoch ms, refreshed while the trainer lives
PID = "activelab.pid"
HOST = "activelab.host"
PROCESS_STARTED = "activelab.process_started"  # create time of PID, so a reused PID is not alive
ERROR = "activelab.error"
# "running" from the run's end while its logged model and evaluation are made (then deleted)
FOLLOW_UPS = "activelab.follow_ups"
PARENT_RUN = "activelab.parent_run"
PARENT_CHECKPOINT = "activelab.parent_checkpoint"
START_EPOCH = "activelab.start_epoch"  # epochs already trained along the lineage
EPOCHS_TOTAL = "activelab.epochs_total"  # lineage epochs reached so far
# epochs this run was asked to train: runs made before 0.2 only; now the `epochs` param
TARGET_EPOCHS = "activelab.target_epochs"
LAST_CHECKPOINT = "activelab.last_checkpoint"
RUN_NUMBER = "activelab.run_number"  # 1, 2, 3... per model, for readable run names
PROGRESS = "activelab.progress"  # JSON: epoch, step, steps per epoch, samples/s, ETA
PREDICTIONS = "activelab.predictions"  # artifact path of the per-sample predictions
EVAL_OF = "activelab.eval_of"  # on an eval run: the run whose checkpoint it evaluated
EVAL_CHECKPOINT = "activelab.eval_checkpoint"  # ... and which checkpoint
BACKEND = "activelab.backend"  # where the worker runs: "local", "ray", a plugin's backend
BACKEND_ADDRESS = "activelab.backend_address"  # e.g. the Ray dashboard's address
REGISTERED_VERSION = "activelab.registered_version"  # the registry version made from this run
BACKEND_JOB = "activelab.backend_job"  # the backend's id of the worker (e.g. a Ray job id)
# Tags that only mean something while the trainer lives (liveness, the stop request); removed
# when the run ends, so a finished run's Tags box in the MLflow UI keeps what tells its story.
PROCESS_TAGS = (HEARTBEAT, PID, HOST, PROCESS_STARTED, STOP_REQUESTED)

# --- experiment-level artifacts (live labels) -----------------------------------------------
ARTIFACT_PREFIX = "activelab"
LABELS_DIR = "activelab/labels"

# --- MLflow's own tags (their values are MLflow's constants in mlflow.utils.mlflow_tags, checked
# by a test; spelled here so importing the keys never imports MLflow, e.g. for `activelab --help`)
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
MLFLOW_SOURCE_NAME = "mlflow.source.name"
MLFLOW_SOURCE_TYPE = "mlflow.source.type"
MLFLOW_USER = "mlflow.user"
NOTE_TAG = "mlflow.note.content"  # MLFLOW_RUN_NOTE: a model's or a run's description in the UI
MLFLOW_EXPERIMENT_KIND = "mlflow.experimentKind"  # the UI's experiment type (no constant in 3.x)
