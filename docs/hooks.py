"""mkdocs hooks: the pages that are generated from the code and the data, never copied by hand.

A page that holds a marker line such as ``<!-- generated: cli-reference -->`` gets the generated
Markdown in its place at build time, so the CLI reference cannot drift from ``deploykit.cli:app``
and the known-divergence table cannot drift from ``conformance/known_divergences.yaml``.
``tests/project/test_docs.py`` builds the site and checks that every command and every entry is there.
"""

from __future__ import annotations

import inspect
import re

import click

CLI_MARKER = "<!-- generated: cli-reference -->"
DIVERGENCE_MARKER = "<!-- generated: known-divergences -->"


def _cell(text: str) -> str:
    """One Markdown table cell: no line breaks, no bare pipes."""
    return " ".join(str(text).split()).replace("|", "\\|")


def walk_commands(group: click.Command, path: tuple[str, ...] = ("deploykit",)):
    """Every command and group under ``group``, depth first, with its full name (``deploykit conformance run``)."""
    yield path, group
    if isinstance(group, click.Group):
        for name in sorted(group.commands):
            yield from walk_commands(group.commands[name], path + (name,))


def _default(param: click.Parameter, ctx: click.Context) -> str:
    """The default as a user sees it; a flag that is off and an unset option say nothing."""
    if param.required:
        return "required"
    default = param.get_default(ctx, call=False)
    unset = type(default).__module__.startswith("click")  # click >= 8.3 marks "no default" with a sentinel
    if unset or callable(default) or default is None or default == () or (getattr(param, "is_flag", False) and default is False):
        return ""
    if isinstance(default, (list, tuple)):
        default = ", ".join(str(value) for value in default)
    return f"`{default}`"


def _option_rows(command: click.Command, ctx: click.Context) -> list[str]:
    """One table row per option and argument: its names, its help, its default."""
    rows = []
    for param in command.get_params(ctx):
        if isinstance(param, click.Argument):
            names = param.human_readable_name.upper() + ("..." if param.nargs == -1 else "")
            help_text = "argument" + ("" if param.required else " (optional)")
        else:
            record = param.get_help_record(ctx)
            if record is None or param is command.get_help_option(ctx):  # --help is on every command: cli.md says so once
                continue
            names = record[0]
            help_text = getattr(param, "help", None) or ""
        # Python-Markdown keeps a pipe inside a code span in its cell; escaped, the backslash would show.
        rows.append(f"| `{' '.join(names.split())}` | {_cell(help_text)} | {_default(param, ctx)} |")
    return rows


def command_markdown(path: tuple[str, ...], command: click.Command, parent: click.Context | None) -> str:
    """One command's section: usage, help, options."""
    ctx = click.Context(command, info_name=path[-1], parent=parent)
    usage = " ".join(path) + " " + " ".join(command.collect_usage_pieces(ctx))
    lines = [f"{'#' * min(len(path) + 1, 4)} `{' '.join(path)}`", "", "```text", f"Usage: {usage.strip()}", "```", ""]
    if command.help:
        lines += [inspect_clean(command.help), ""]
    rows = _option_rows(command, ctx)
    if rows:
        lines += ["| option | what it does | default |", "|---|---|---|", *rows, ""]
    if isinstance(command, click.Group):
        lines += ["Subcommands: " + ", ".join(f"`{' '.join(path + (name,))}`" for name in sorted(command.commands)), ""]
    return "\n".join(lines)


def inspect_clean(text: str) -> str:
    """A docstring as Markdown paragraphs (click's ``\\b`` no-rewrap markers dropped)."""
    return inspect.cleandoc(text).replace("\b\n", "")


def cli_reference(app: click.Command | None = None) -> str:
    """The whole command tree of ``deploykit.cli:app`` as Markdown."""
    if app is None:
        from deploykit.cli import app
    sections, contexts = [], {}
    for path, command in walk_commands(app):
        parent = contexts.get(path[:-1])
        section = command_markdown(path, command, parent)
        contexts[path] = click.Context(command, info_name=path[-1], parent=parent)
        sections.append(section)
    return "\n".join(sections)


def _upstream(text: str) -> str:
    """A GitHub link reads as ``owner/repo#N``; anything else ("not yet reported ...") as written."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)/(?:issues|pull)/(\d+)", text.strip())
    if match:
        return f"[{match[1]}/{match[2]}#{match[3]}]({text.strip()})"
    if text.startswith("http"):
        return f"<{text.strip()}>"
    return _cell(text)


def _repro(entry, repo_url: str | None) -> str:
    """The repro folder's path in the repository (`deploykit repro --divergence ID` writes it); a link
    when mkdocs.yml names the repository."""
    if entry.repro is None:
        return ""
    path = f"conformance/repros/{entry.id}/"
    if repo_url:
        return f"[`{path}`]({repo_url.rstrip('/')}/tree/main/{path})"
    return f"`{path}`"


def divergence_table(table: list | None = None, repo_url: str | None = None) -> str:
    """conformance/known_divergences.yaml as a Markdown table (the same validated loader runs use)."""
    if table is None:
        from deploykit.results.divergences import load
        table = load()
    lines = ["| id | backends | verdicts | limited to | reason | upstream | repro |", "|---|---|---|---|---|---|---|"]
    for entry in table:
        limits = "; ".join(part for part in (", ".join(entry.precisions), entry.versions) if part)
        lines.append(
            f"| `{entry.id}` | {', '.join(entry.backends)} | {', '.join(entry.verdicts)} | {_cell(limits)} | "
            f"{_cell(entry.reason)} | {_upstream(entry.upstream)} | {_repro(entry, repo_url)} |"
        )
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    """mkdocs event: put the generated Markdown where a page holds a marker."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if DIVERGENCE_MARKER in markdown:
        markdown = markdown.replace(DIVERGENCE_MARKER, divergence_table(repo_url=config.get("repo_url")))
    return markdown
