"""Reports of a run: the report model (``model.py``), conformance-report.json / .md, Allure results and labels,
the upgrade gate and the matrix of many runs."""

from conformance.report.conformance import write_reports
from conformance.report.model import SCHEMA_VERSION, CheckResult, Measurement, Report, Status

__all__ = ["SCHEMA_VERSION", "CheckResult", "Measurement", "Report", "Status", "write_reports"]
