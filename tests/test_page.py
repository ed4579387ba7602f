"""`report DIR` (issue 15): one self-contained HTML page, checked in a real browser; and the
plots it shows."""

import re
import shutil
import subprocess

import pytest
from conftest import cli

from evolution.page import constants_of, first_parents, token_diff
from evolution.report import constant_lines

SECTIONS = ("Generations", "Pareto front", "Champion constants", "Final report", "Hall of fame",
            "Lineage of the champion", "Sample answers", "A trace: the champion on")


@pytest.fixture(scope="module")
def page(tiny_run):
    out, _ = tiny_run
    path = cli("report", out, check=0).stdout.strip()
    assert path == str(out / "report.html")
    return out / "report.html"


def test_the_page_is_self_contained(page):
    text = page.read_text()
    for section in SECTIONS:
        assert f"<h2>{section}" in text, section
    images = re.findall(r'<img alt="[^"]*" src="([^"]{0,30})', text)
    assert len(images) == 5 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(src|href)=\"?(https?:|//)", text)  # nothing fetched at view time
    assert "<script" not in text


def test_the_page_renders_in_headless_chromium(page, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install -y chromium); the "
                    "page was not rendered in a browser")
    shot = tmp_path / "page.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    subprocess.run([browser, *flags, "--window-size=1200,2400", f"--screenshot={shot}",
                    page.as_uri()], capture_output=True, timeout=120, check=True)
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert all(f"<h2>{s}" in dom for s in SECTIONS)

    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    ink = (pixels.min(axis=-1) < 0.9).mean()  # text, tables and figures, not a blank page
    assert ink > 0.02, ink
    # the figures were decoded: matplotlib's first line colour (#1f77b4) is on the page
    blue = ((abs(pixels[..., 0] - 0x1F / 255) < 0.05) & (abs(pixels[..., 1] - 0x77 / 255) < 0.05)
            & (abs(pixels[..., 2] - 0xB4 / 255) < 0.05)).sum()
    assert blue > 100, blue


def test_a_program_diff_marks_words_removed_and_added():
    assert token_diff("(sample (top-p (temperature logits 0.8) 0.9))",
                      "(sample (top-p (temperature logits 0.72) 0.9))") == \
        "(sample (top-p (temperature logits <del>0.8</del> <ins>0.72</ins>) 0.9))"
    assert token_diff("(greedy logits)", "(sample logits)") == \
        "(<del>greedy</del> <ins>sample</ins> logits)"


def test_constants_are_listed_by_primitive():
    from engine_dsl import Type, read_expr

    expr = read_expr("(sample (top-p (temperature logits 0.7219) (fixed 0.9)))", Type.DECODER)
    assert constants_of(expr) == "temperature 0.7219, top-p 0.9 (fixed)"


def test_constants_are_drawn_as_one_line_per_champion_lineage():
    def entry(g, ident, constants):
        return {"generation": g, "champion": {"id": ident, "constants": constants}}

    log = [entry(0, "g0-1", {"2:temperature.t": 0.8}),
           entry(1, "g1-4", {"2:temperature.t": 0.7}),
           entry(2, "g2-9", {"2:top-p.p": 0.9, "4:temperature.t": 0.5}),
           entry(3, "g3-2", {"2:top-p.p": 0.95, "4:temperature.t": 0.4})]
    assert constant_lines(log) == [
        ("temperature.t (g0-1)", [(0, 0.8), (1, 0.7)]),
        ("top-p.p (g2-9)", [(2, 0.9), (3, 0.95)]),
        ("temperature.t (g2-9)", [(2, 0.5), (3, 0.4)]),
    ]


def test_plots_have_integer_generation_axes(tiny_run):
    """Every generation axis ticks whole generations only (checked on the figures drawn)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evolution.report import write_plots

    out, _ = tiny_run
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    figures = []
    real_close = plt.close
    plt.close = figures.append  # keep the figures write_plots draws
    try:
        write_plots(out, log, lambda path, data: None)
    finally:
        plt.close = real_close
    checked = 0
    for fig in figures:
        for ax in fig.axes:
            if ax.get_xlabel().startswith("generation"):
                fig.canvas.draw()
                ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
                assert ticks and all(float(t).is_integer() for t in ticks), ax.get_title()
                checked += 1
        real_close(fig)
    assert checked == 4  # score, cost, constants, model loss


def test_the_plots_of_a_run_with_no_generation_yet_warn_nothing(tmp_path):
    """`report DIR` of a run stopped before generation 0 was committed (an empty log) draws
    empty plots, without matplotlib's 'No artists with labels' warnings on stderr."""
    import warnings

    from evolution.report import write_plots

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        made = write_plots(tmp_path, [], lambda path, data: None)
    assert [p.name for p in made] == ["score-cost.png", "pareto-front.png", "constants.png",
                                      "model-loss.png"]


def test_constants_follow_the_line_of_first_parents():
    import networkx as nx

    graph = nx.DiGraph([("g0-1", "g1-3"), ("g0-2", "g1-3"), ("g1-3", "g2-5"), ("g0-0", "g2-5")])
    assert first_parents(graph, "g2-5") == ["g2-5", "g0-0"]
    assert first_parents(graph, "g1-3") == ["g1-3", "g0-1"]
