"""Reports of a run: Allure results and labels, conformance-report.json / .md."""

from conformance.report.conformance import SCHEMA_VERSION, CheckResult, Measurement, RunReport, write_reports

__all__ = ["SCHEMA_VERSION", "CheckResult", "Measurement", "RunReport", "write_reports"]
