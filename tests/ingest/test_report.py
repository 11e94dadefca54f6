"""The ingest run report."""

from __future__ import annotations


def test_reports_of_runs_in_the_same_second_do_not_overwrite_each_other(home, monkeypatch):
    from regionmir.ingest import report as report_module

    monkeypatch.setattr(report_module.time, "time", lambda: 1_800_000_000.25)  # a frozen clock
    first = report_module.default_report_path("regions")
    report = report_module.Report(first)
    report.write({"event": "failed", "image_id": "a"})
    report.close()
    second = report_module.default_report_path("regions")
    assert second != first and first.read_text().count("failed") == 1


def test_a_report_that_cannot_be_written_keeps_the_error_and_lets_the_run_go_on():
    """``--report /dev/full``: every write fails (ENOSPC). The ingest's points matter more than its
    report, so nothing is raised here; the first error is kept for the runner to tell, once."""
    from regionmir.ingest.report import Report

    report = Report("/dev/full")
    report.write({"event": "failed", "image_id": "a"})
    report.write({"event": "summary"})
    report.close()
    assert report.error is not None and report.error.strerror == "No space left on device"
