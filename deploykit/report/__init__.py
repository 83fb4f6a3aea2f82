"""Renderers of a run's summary (terminal, Markdown, JSON, JUnit, HTML) and of the other commands.

Each takes the pure data of `deploykit.results.summary` and lays it out; none computes a figure.
"""

from deploykit.report.html import to_html
from deploykit.report.junit import to_junit
from deploykit.report.markdown import to_markdown
from deploykit.report.profile import profile_table
from deploykit.report.records import to_json_records, to_json_report
from deploykit.report.terminal import print_summary

__all__ = ["print_summary", "profile_table", "to_html", "to_json_records", "to_json_report", "to_junit", "to_markdown"]
