"""The plan as data (Step, Command, Manifest) lives in the kube layer, shared with k3s: ``kube/steps.py``."""

from conformance.providers.kube.steps import (
    Command,
    Manifest,
    Step,
    Until,
    manifest_file,
    redacted,
    render_argv,
    render_plan,
)

__all__ = ["Command", "Manifest", "Step", "Until", "manifest_file", "redacted", "render_argv", "render_plan"]
