"""Every user-supplied string is data in every renderer.

One table of hostile strings (rich markup, live links, HTML that runs or hides the page, Markdown
table pipes and code, terminal escapes, every C0 control, bidi overrides, a lone surrogate, a very
long string) goes into a matrix label, a backend's reason, a divergence id and reason, the run's
matrix name and environment, and through every renderer: the terminal (rich), Markdown (parsed back
with markdown-it), JUnit (ElementTree and junitparser), HTML (html.parser), JSON, the comparison,
profile, lint and fuzz lines.  Each output must be well-formed, show the string as text, and raise
nothing.  The end-to-end test runs the command line with such a matrix and such a backend.
"""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
from helpers import deploykit
from rich.console import Console

from deploykit.fuzz.classes import ClassKey, FailureClass
from deploykit.lint import Finding, NodeReport
from deploykit.op.spec import ConvTransposeSpec
from deploykit.report import print_summary, profile_table, to_html, to_json_report, to_junit, to_markdown
from deploykit.report.compare import comparison_markdown, print_comparison
from deploykit.report.escape import one_line, visible
from deploykit.report.export import lint_summary
from deploykit.report.fuzz import class_lines
from deploykit.results.compare import Change, Comparison
from deploykit.results.divergences import Divergence
from deploykit.results.result import Result, Run
from deploykit.results.summary import summarize

HOSTILE = {
    "rich-close": "[/bold]close",
    "rich-link": "[link=http://x]y[/link]",
    "script": "<script>alert(1)</script>",
    "img-onerror": "<img src=x onerror=alert(1)>",
    "open-comment": "<!-- the rest is hidden",
    "pipes": "a|b||c\\|d",
    "backticks": "`x` ``y`` ```z",
    "markdown": "**b** _i_ [l](http://x) ![i](http://x/i.png) $x$ ~~s~~ <http://x> &amp; #h",
    "ansi": "\x1b[31mred\x1b[0m \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\",
    "c0-controls": "c0:" + "".join(map(chr, range(32))) + "\x7f\x85\x9b",
    "bidi": "\u202egnp.exe\u202c \u2066iso\u2069 \u200f",
    "surrogate": "lone \ud800 surrogate \ufffe\uffff",
    "long": "long-" + "x" * 20000,
}
IDS = list(HOSTILE)
_ESC_FROM_USER = ("\x1b[31m", "\x1b]8;")  # rich's own styles use other codes; these only come from the strings


def _run(text: str) -> Run:
    environment = {"cpu": text, "platform": text, "gpus": [text], "packages": {"pkg": text}}
    return Run(1, 0.0, 1.0, "complete", text, {"shard": None}, environment, 3)


def _no_surrogates(text: str) -> str:
    """The divergence table is YAML read by pydantic: it cannot hold a lone surrogate at all."""
    return re.sub("[\ud800-\udfff]", "?", text)


def _known(text: str) -> Divergence:
    text = _no_surrogates(text)
    return Divergence(id=f"id-{text}", backends=("ort-cpu",), hazard="grouped", verdicts=("rejected",),
                      reason=text, upstream=text)


def _results(text: str) -> list[Result]:
    spec = ConvTransposeSpec((1, 2, 5), 2, (3,), name=text)
    failing = replace(Result.for_spec(spec, "ort-cpu", "crash", text), duration_ms=1.0)
    known = replace(Result.for_spec(spec, "ort-cpu", "rejected", text, precision="fp16"), known_divergence=f"id-{_no_surrogates(text)}")
    passing = replace(Result.for_spec(spec, "reference"), bound_ratio=0.5, max_abs_err=1e-7, max_ulp_err=1,
                      latency_median_ms=1.0, latency_cv=0.01)
    return [failing, known, passing]


def _summary(text: str):
    return summarize(_results(text), _run(text), [_known(text)])


def _terminal(render) -> str:
    console = Console(file=io.StringIO(), width=160, force_terminal=True, color_system="truecolor")
    render(console)
    return console.file.getvalue()


def _assert_terminal_data(output: str, text: str) -> None:
    assert not any(code in output for code in _ESC_FROM_USER), "a terminal escape from a user string reached the terminal"
    assert not any(char in output for char in "\x00\x07\x08\x9b\u202e\u2066\ud800"), "an invisible character was printed"
    plain = re.sub(r"\x1b\[[0-9;]*m|[│┃\n ]", "", output)  # without styles, borders and folding
    assert re.sub(r"\s", "", one_line(text))[:200] in plain  # shown as itself (written out), not obeyed


@pytest.mark.parametrize("text", HOSTILE.values(), ids=IDS)
def test_terminal_shows_the_string_as_text(text):
    output = _terminal(lambda console: print_summary(_summary(text), console))
    _assert_terminal_data(output, text)


def _unescaped_pipes(line: str) -> int:
    """Pipes a GFM table splits on: those not preceded by an odd number of backslashes."""
    return len(re.findall(r"(?<!\\)(?:\\\\)*\|", line))


def _assert_raw_markdown_is_inert(markdown: str) -> None:
    """No raw HTML at all: renderers differ (GitHub's is not markdown-it), escaped text is inert in every one."""
    assert not re.search(r"<!--|<script|<img|\x1b", markdown), re.search(r".{0,40}(<!--|<script|<img|\x1b).{0,40}", markdown)


def _assert_tables_keep_their_columns(markdown: str) -> None:
    """Every row of a Markdown table splits into as many cells as its header: a string cannot add a cell."""
    header = None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            header = None
        elif header is None:
            header = _unescaped_pipes(line)
        else:
            assert _unescaped_pipes(line) == header, line[:300]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.comments: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_comment(self, data):
        self.comments.append(data)

    def handle_data(self, data):
        self.text.append(data)


def _parsed_html(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    if "<!--" in page and not parser.comments:  # an unclosed comment hides the rest: html.parser reports none
        parser.comments.append(page[page.index("<!--"):][:80])
    return parser


@pytest.mark.parametrize("text", HOSTILE.values(), ids=IDS)
def test_markdown_renders_the_string_as_text(text):
    from markdown_it import MarkdownIt

    markdown = to_markdown(_summary(text))
    _assert_raw_markdown_is_inert(markdown)
    _assert_tables_keep_their_columns(markdown)
    page = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)
    parsed = _parsed_html(page)
    assert not {"script", "img", "a"} & set(parsed.tags) and not parsed.comments
    shown = " ".join(one_line(text).split())
    assert shown in "".join(parsed.text)  # the string, as a reader sees it


@pytest.mark.parametrize("text", HOSTILE.values(), ids=IDS)
def test_junit_is_well_formed_and_carries_the_string(text):
    junitparser = pytest.importorskip("junitparser")
    results = _results(text)
    document = to_junit(summarize(results, _run(text), [_known(text)]), results, [_known(text)])
    root = ET.fromstring(document.encode("utf-8"))
    names = [case.get("name") for case in root.iter("testcase")]
    assert names == [visible(text)] * 3
    failure = next(root.iter("failure"))
    assert visible(text)[:200] in failure.get("message")
    xml = junitparser.JUnitXml.fromstring(document)
    assert sum(1 for suite in xml for _ in suite) == 3


@pytest.mark.parametrize("text", HOSTILE.values(), ids=IDS)
def test_html_escapes_the_string(text):
    results = _results(text)
    page = to_html(summarize(results, _run(text), [_known(text)]), results)
    parsed = _parsed_html(page)
    assert parsed.tags.count("script") == 1 and "img" not in parsed.tags and not parsed.comments  # only the page's own script
    assert visible(text) in "".join(parsed.text)
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202e\ud800]", page)


@pytest.mark.parametrize("text", HOSTILE.values(), ids=IDS)
def test_json_keeps_the_string_exactly(text):
    results = _results(text)
    document = json.dumps(to_json_report(summarize(results, _run(text), [_known(text)]), results, [_known(text)]))
    loaded = json.loads(document)
    assert [record["label"] for record in loaded["results"]] == [text] * 3
    assert loaded["results"][0]["reason"] == text and loaded["run"]["matrix"] == text


def _comparison(text: str) -> Comparison:
    change = Change(text, text, "pass", text, text)
    return Comparison(text, text, (text, text), 1, added=[text], missing=[text], regressions=[change], fixes=[change],
                      notes=[text], incomplete=[text])


@pytest.mark.parametrize("text", HOSTILE.values(), ids=IDS)
def test_the_comparison_shows_the_string_as_data(text):
    from markdown_it import MarkdownIt

    _assert_terminal_data(_terminal(lambda console: print_comparison(_comparison(text), console)), text)
    markdown = comparison_markdown(_comparison(text))
    _assert_raw_markdown_is_inert(markdown)
    parsed = _parsed_html(MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown))
    assert not {"script", "img", "a"} & set(parsed.tags) and not parsed.comments
    _assert_tables_keep_their_columns(markdown)


@pytest.mark.parametrize("text", HOSTILE.values(), ids=IDS)
def test_profile_lint_and_fuzz_lines_show_the_string_as_data(text):
    row = SimpleNamespace(backend=text, batch=1, status=text, reason=text, warnings=[text])
    _assert_terminal_data(_terminal(lambda console: profile_table([row], console, text)), text)
    node = NodeReport(text, text, text, None, problem=text, findings=[Finding("hazard", text, [text], text, text, text)],
                      verdicts=[{"backend": text, "verdict": text, "label": text, "reason": text}], verdict_source="exact",
                      recorded_findings=[{"backend": text, "verdict": text, "label": text, "reason": text}])
    _assert_terminal_data(_terminal(lambda console: lint_summary([node], console, text)), text)
    spec = ConvTransposeSpec((1, 2, 5), 2, (3,), name=text)
    found = FailureClass(ClassKey(text, "crash", None, text), 1, Result.for_spec(spec, "ort-cpu", "crash", text))
    [line] = class_lines([found], set())
    assert "\n" not in line and one_line(text)[:100] in line and not re.search(r"[\x00-\x1f\x7f\u202e\ud800]", line)


# ----- the command line, end to end --------------------------------------------------------------------------
CLI_LABELS = ["[/bold]close", "[link=http://x]y[/link]", "<script>alert(1)</script>|`x`", "<!-- \x1b[31mred\x07\x01 \u202e"]


@pytest.fixture
def hostile_backend(monkeypatch, fault_backends):
    monkeypatch.setenv("DEPLOYKIT_BACKENDS", "hostile=fault_backends:HostileBackend")


@pytest.mark.slow
def test_a_run_with_hostile_labels_and_reasons_stores_reports_and_exits_on_its_findings(tmp_path, hostile_backend):
    from fault_backends import HostileBackend

    cases = [{"name": label, "input_shape": [1, 2, 4 + i], "out_channels": 2, "kernel_shape": [3]} for i, label in enumerate(CLI_LABELS)]
    (tmp_path / "m.yaml").write_text(json.dumps({"name": "[/bold]<!--", "cases": cases}))  # JSON is YAML
    run = deploykit("conformance", "run", "--matrix", "m.yaml", "--backends", "reference,hostile", "--db", "r.db",
                    "--json", "r.json", cwd=tmp_path)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]  # the hostile backend's errors are findings
    assert "\x1b[31m" not in run.stdout + run.stderr and "[/bold]close" in run.stdout
    records = json.loads((tmp_path / "r.json").read_text())["results"]
    assert {r["label"] for r in records} == set(CLI_LABELS)
    assert {r["reason"] for r in records if r["backend"] == "hostile"} == {HostileBackend.MESSAGE}
    for format_ in ("table", "md", "junit", "html"):
        report = deploykit("conformance", "report", "--db", "r.db", "--format", format_, cwd=tmp_path)
        assert report.returncode == 0 and "Traceback" not in report.stderr, (format_, report.stderr[-2000:])
        assert "\x1b[31m" not in report.stdout, format_
        if format_ != "table":  # the terminal shows `<!--` as text; markup formats must not carry it raw
            assert "<!--" not in report.stdout and report.stdout.count("<script>") == (format_ == "html"), format_  # the page's own
    junit = deploykit("conformance", "report", "--db", "r.db", "--format", "junit", cwd=tmp_path).stdout
    assert len(list(ET.fromstring(junit.encode()).iter("testcase"))) == 8


@pytest.mark.parametrize("text", HOSTILE.values(), ids=IDS)
def test_the_repro_issue_shows_a_runtimes_message_as_data(tmp_path, text):
    """ISSUE.md is pasted into an upstream tracker: the runtime's message and the environment are data there too."""
    from markdown_it import MarkdownIt

    from deploykit.repro.bundle import write_bundle
    from deploykit.results.store import Store

    spec = ConvTransposeSpec(input_shape=(1, 1, 1), out_channels=1, kernel_shape=(1,), output_shape=(2,), bias=False)
    result = replace(Result.for_spec(spec, "ort-cpu", "rejected", text), backend_version="1.0")
    store = Store(tmp_path / "r.db")
    run_id = store.start_run("m", {}, {"cpu": text, "platform": text, "gpus": [text], "packages": {"onnx": text}}, 1)
    store.add(run_id, result)
    store.close()
    write_bundle(tmp_path / "r.db", spec.id, "ort-cpu", tmp_path / "bundle")
    issue = (tmp_path / "bundle" / "ISSUE.md").read_text()
    page = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(issue)
    parsed = _parsed_html(page)
    assert not {"script", "img", "a"} & set(parsed.tags) and not parsed.comments
    assert visible(text) in "".join(parsed.text) and "## Environment" in issue.split("## What happens")[1]


def test_a_message_with_an_undecodable_byte_is_stored_not_lost(tmp_path):
    """Python decodes an undecodable byte of a file name to a lone surrogate; a runtime's message
    quoting that name must be stored (written out), not stop the run with a traceback."""
    from deploykit.results.store import Store

    spec = ConvTransposeSpec((1, 2, 5), 2, (3,))
    store = Store(tmp_path / "r.db")
    run_id = store.start_run("m", {}, {}, 1)
    store.add(run_id, Result.for_spec(spec, "ort-cpu", "crash", "cannot open /tmp/\udcff.bin"))
    [stored] = store.results(run_id)
    store.close()
    assert stored.reason == "cannot open /tmp/\\udcff.bin"
