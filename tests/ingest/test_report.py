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
