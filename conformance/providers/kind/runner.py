"""The command seam lives in the kube layer, shared with k3s: ``kube/runner.py``."""

from conformance.providers.kube.runner import (
    OUTPUT_CHECKS,
    Recorder,
    Result,
    Runner,
    SubprocessRunner,
    run_command,
    run_steps,
)

__all__ = ["OUTPUT_CHECKS", "Recorder", "Result", "Runner", "SubprocessRunner", "run_command", "run_steps"]
