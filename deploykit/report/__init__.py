"""Reports of stored results: terminal summary, JSON records, Markdown."""

from deploykit.report.latency import latency_summary, profile_table
from deploykit.report.render import summary, to_json_records, to_json_report, to_markdown

__all__ = ["latency_summary", "profile_table", "summary", "to_json_records", "to_json_report", "to_markdown"]
