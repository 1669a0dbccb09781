"""Suite-wide fixtures and the CI rule that nothing may be skipped.

Tests skip with a reason where a real peer (snmpd, PostgreSQL, Chromium, network
namespaces) cannot run on a developer's machine.  CI installs all of them, so there
``MASA_REQUIRE_ALL=1`` turns any skip into a failure: a missing install step shows up
as red, never as a quietly smaller suite."""

import os

import pytest

pytest_plugins = ["tests.fixtures_pg"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("MASA_REQUIRE_ALL") == "1" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but MASA_REQUIRE_ALL=1 (CI must run every test): {reason}"
