"""Self-validation: prove that every check can fail, at the settings meshconf ships.

``meshconf selftest`` first runs the whole catalogue against a clean local mesh at the shipped settings
(default budgets, load windows and consistency timeouts: nothing relaxed); every check must pass. Then it
starts the local mesh with each deliberate defect (``meshconf defects``) and runs the checks that claim to
catch it (:data:`CATCHES`). A catch counts only when the check *failed* (not broke, not skipped) on the
``expect_*`` the table names for it, and not while establishing its starting state (a precondition).

::

    result = run_selftest(SelftestPlan.build(topology=None, parallel=None), out, progress)
    result.as_dict()    # the --json document; result.exit_code; render_markdown(result)
"""

from conformance.selftest.catches import CATCHES, Catch
from conformance.selftest.plan import Run, SelftestPlan
from conformance.selftest.runner import run_selftest
from conformance.selftest.verdict import CheckVerdict, DefectVerdict, SelftestResult, render_markdown, render_text

__all__ = [
    "CATCHES",
    "Catch",
    "CheckVerdict",
    "DefectVerdict",
    "Run",
    "SelftestPlan",
    "SelftestResult",
    "render_markdown",
    "render_text",
    "run_selftest",
]
