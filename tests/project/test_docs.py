"""The documentation: the site builds strictly, its generated pages are complete, its commands run.

The CLI reference and the known-divergence table are generated at build time (docs/hooks.py), so
the test walks the click app and reads the YAML itself and checks the built pages hold every
command, option and entry: a generator that drops one fails here.  Commands in the pages marked
`<!-- test: exit N -->` (the convention in CONTRIBUTING.md) are run, so an example that no longer
works fails here too.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from helpers import ROOT

from deploykit.cli import app
from deploykit.op.judging import VERDICTS
from deploykit.results.divergences import load

pytestmark = pytest.mark.slow  # builds the site and runs the documented commands

DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
#: a marker line, then a fenced bash block: every `deploykit ...` line in it must exit with N
TESTED_BLOCK = re.compile(r"^<!-- test: exit (\d+) -->\n```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
README_MAX_LINES = 300


def _commands(group: click.Command, path: str = "deploykit") -> dict[str, click.Command]:
    """Every command and group of the app by its full name, found without docs/hooks.py."""
    found = {path: group}
    for name, command in getattr(group, "commands", {}).items():
        found.update(_commands(command, f"{path} {name}"))
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once with `mkdocs build --strict` into a temporary folder.

    Without `-q`: mkdocs 1.6 counts the warnings that strict mode turns into a failure only at the
    levels it logs, so `-q` would let a broken link pass.
    """
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                           check=False, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stderr[-3000:]
    return out


def _page_text(site: Path, page: str) -> str:
    """A built page's text, tags dropped and entities decoded, so it can be searched for names."""
    return html.unescape(re.sub(r"<[^>]+>", "", (site / page / "index.html").read_text(encoding="utf-8")))


def _command_sections(site: Path) -> dict[str, str]:
    """The CLI reference cut at each command's heading: {"deploykit conformance run": its section's text}."""
    page = (site / "cli" / "index.html").read_text(encoding="utf-8")
    sections = {}
    for chunk in re.split(r"(?=<h[2-4][^>]*><code>deploykit)", page)[1:]:
        name = re.match(r"<h[2-4][^>]*><code>([^<]*)</code>", chunk)[1]
        sections[name] = html.unescape(re.sub(r"<[^>]+>", "", chunk))
    return sections


def test_cli_reference_has_every_command_and_option(site):
    sections = _command_sections(site)
    commands = _commands(app)
    assert set(sections) == set(commands), f"missing: {set(commands) - set(sections)}; extra: {set(sections) - set(commands)}"
    for name, command in commands.items():
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-") and opt not in ("-h", "--help"):
                    assert opt in sections[name], f"{name}: option {opt} is missing from the CLI reference"


def test_known_divergence_page_has_every_entry(site):
    text = _page_text(site, "known-divergences")
    table = load()
    assert table, "the known-divergence table is empty"
    for entry in table:
        assert entry.id in text, f"{entry.id} is missing from the known-divergence page"
        if entry.upstream.startswith("https://"):
            assert entry.upstream in (site / "known-divergences" / "index.html").read_text(), entry.id


def test_verdict_page_lists_exactly_the_verdicts_deploykit_gives():
    """The verdict table is written by hand (it says more than metrics.VERDICTS), so it is checked against it."""
    rows = re.findall(r"^\| `([a-z-]+)` \|", (DOCS / "verdicts.md").read_text(encoding="utf-8"), re.MULTILINE)
    assert rows == list(VERDICTS)


def _tested_blocks(page: Path) -> list[tuple[int, list[str]]]:
    """(expected exit code, the block's `deploykit` lines) for every marked block of a page."""
    return [(int(code), [line for line in body.splitlines() if line.startswith("deploykit ")])
            for code, body in TESTED_BLOCK.findall(page.read_text(encoding="utf-8"))]


PAGES_WITH_COMMANDS = sorted(p.name for p in DOCS.glob("*.md") if _tested_blocks(p))


def test_the_convention_finds_the_documented_commands():
    """A marker that stops matching would silently test nothing."""
    assert {"getting-started.md", "export-lint.md"} <= set(PAGES_WITH_COMMANDS)
    assert all(lines for p in PAGES_WITH_COMMANDS for _, lines in _tested_blocks(DOCS / p))


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS)
def test_documented_commands_exit_as_documented(page, tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md")}
    for expected, lines in _tested_blocks(DOCS / page):
        for line in lines:
            done = subprocess.run(["bash", "-c", line], check=False, cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == expected, \
                f"{page}: `{line}` exited {done.returncode}, documented {expected}\n{done.stderr[-2000:]}"


def test_readme_is_a_landing_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    for target in re.findall(r"\]\(((?!https?://)[^)#]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
