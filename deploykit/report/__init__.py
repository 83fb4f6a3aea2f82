"""Reports of stored results: terminal summary, JSON records, Markdown."""

from deploykit.report.render import summary, to_json_records, to_markdown

__all__ = ["summary", "to_json_records", "to_markdown"]
