"""The `ray` backend: each run is a Ray job (`python -m activelab.worker -`) on a Ray cluster.

Ray Jobs run the worker under a job supervisor on the cluster, so a run outlives the process
that launched it (`activelab train --detach`, a closed notebook) and asks the cluster for its
own CPUs and GPUs. The worker reports through MLflow like a local one: the app and the CLI need
no Ray connection to follow, stop or find it dead. Needs `pip install 'mlflow-activelab[ray]'`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import param

from activelab import keys
from activelab.backend import Backend, Job
from activelab.errors import InvalidConfigError

if TYPE_CHECKING:
    from activelab.config import ModelConfig
    from activelab.worker import LaunchSpec

ADDRESS_ENV = "RAY_ADDRESS"  # Ray's own name for the cluster address
INSTALL_HINT = "pip install 'mlflow-activelab[ray]'"
CONNECT_TIMEOUT_S = 5.0
# the job states after which its worker is gone (Ray's JobStatus values)
ENDED = ("STOPPED", "SUCCEEDED", "FAILED")


def dashboard_url(address: str) -> str:
    """Ray Jobs talk to the head's dashboard: http://HOST:8265 (the port is Ray's default)."""
    if "://" not in address:
        address = f"http://{address}"
    parsed = urlparse(address)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidConfigError(
            f"Ray address {address!r} is not the dashboard's http address; use e.g. "
            "http://HEAD:8265 (what `ray start --head` prints as the dashboard)."
        )
    port = parsed.port or 8265
    return f"{parsed.scheme}://{parsed.hostname}:{port}"


def _is_this_machine(host: str | None) -> bool:
    if not host or host == "localhost" or host == socket.gethostname():
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RayBackend(Backend):
    """A job on a Ray cluster (Ray Jobs), with the CPUs and GPUs it asks for."""

    kind = "ray"

    address = param.String(
        default=None,
        allow_None=True,
        doc="The Ray dashboard's address, e.g. http://HEAD:8265 (default: $RAY_ADDRESS).",
    )
    cpus = param.Number(default=1.0, bounds=(0, None), doc="CPUs the run's job asks for.")
    gpus = param.Number(default=0.0, bounds=(0, None), doc="GPUs the run's job asks for.")
    python = param.String(
        default="python",
        doc="The command that runs Python with activelab installed on the cluster's nodes.",
    )

    def url(self) -> str:
        address = self.address or os.environ.get(ADDRESS_ENV)
        if not address:
            raise InvalidConfigError(
                "The ray backend needs the cluster's address: pass --address "
                "http://HEAD:8265 (the Ray dashboard) or set $RAY_ADDRESS."
            )
        return dashboard_url(address)

    def run_tags(self) -> dict[str, str]:
        return {keys.BACKEND: self.kind, keys.BACKEND_ADDRESS: self.url()}

    def check(self, tracking_uri: str, config: ModelConfig) -> None:
        try:
            import ray.job_submission  # noqa: F401
        except ImportError:
            raise InvalidConfigError(f"The ray backend needs Ray: {INSTALL_HINT}") from None
        url = self.url()
        parsed = urlparse(url)
        try:  # a bounded probe first: Ray's client waits on a silent address without end
            socket.create_connection((parsed.hostname, parsed.port or 0), CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise InvalidConfigError(
                f"Cannot reach the Ray cluster at {url} ({exc}). Start one with "
                "`ray start --head` (its dashboard listens on :8265), or check the address."
            ) from None
        if not _is_this_machine(parsed.hostname):
            self._check_tracking_reachable(tracking_uri, url)

    @staticmethod
    def _check_tracking_reachable(tracking_uri: str, url: str) -> None:
        """Workers on other machines log over the network: a store file or a loopback
        server on this machine is out of their reach."""
        tracking = urlparse(tracking_uri)
        if tracking.scheme not in ("http", "https"):
            raise InvalidConfigError(
                f"The Ray cluster at {url} cannot write to this machine's MLflow store "
                f"({tracking_uri}). Serve it with `mlflow server` on an address the cluster "
                "reaches and set MLFLOW_TRACKING_URI to it (README: Running for a team)."
            )
        if _is_this_machine(tracking.hostname):
            raise InvalidConfigError(
                f"The tracking server {tracking_uri} is this machine's own address, which the "
                f"Ray cluster at {url} cannot reach; use an address the cluster can reach."
            )

    def start(self, spec: LaunchSpec, tracking: Any) -> RayJob:
        from ray.job_submission import JobSubmissionClient

        url = self.url()
        spec.home = ""  # each node keeps its own outbox under its own $ACTIVELAB_HOME
        client = JobSubmissionClient(url)
        job_id = client.submit_job(
            entrypoint=f"{self.python} -m activelab.worker -",
            submission_id=f"activelab-{spec.run_id}",
            runtime_env={
                # no credentials: the job's settings show in the Ray dashboard; nodes keep
                # their own MLFLOW_TRACKING_USERNAME/PASSWORD
                "env_vars": {
                    "ACTIVELAB_LAUNCH_SPEC": spec.to_json(),
                    "MLFLOW_TRACKING_URI": spec.tracking_uri,
                    "PYTHONUNBUFFERED": "1",
                }
            },
            entrypoint_num_cpus=self.cpus,
            entrypoint_num_gpus=self.gpus,
            metadata={"activelab_run": spec.run_id, "activelab_model": spec.model_id},
        )
        tracking.set_run_tags(spec.run_id, {keys.BACKEND_JOB: job_id})
        return RayJob(client, job_id, url)


class RayJob(Job):
    """A run's Ray job, seen from the process that submitted it."""

    def __init__(self, client: Any, job_id: str, url: str) -> None:
        self.client = client
        self.job_id = job_id
        self.url = url

    def status(self) -> str:
        return str(getattr(self.client.get_job_status(self.job_id), "value", ""))

    def exit_reason(self) -> str | None:
        status = self.status()
        if status not in ENDED:
            return None
        info = self.client.get_job_info(self.job_id)
        reason = f"The Ray job {self.job_id} ended {status} before ending its run"
        if info.message:
            reason += f" ({info.message.strip()})"
        tail = self.client.get_job_logs(self.job_id).strip().splitlines()[-5:]
        return (
            reason
            + f"; see `ray job logs {self.job_id} --address {self.url}`."
            + ("\n" + "\n".join(tail) if tail else "")
        )

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.status() not in ENDED and time.monotonic() < deadline:
            time.sleep(0.5)  # the run has ended; its job is finishing the evaluation
