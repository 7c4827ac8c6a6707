"""report.html as a user sees it: a real compile (`slmc compile --report`) and evaluation
(`slmc eval --report`) through the CLI, rendered by headless Chromium; the screenshot is not blank
and the rendered page answers how big, how accurate and how fast."""

import html
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

GPTQ_RECIPE = """\
passes: [{quantize: {bits: 4, group_size: 32, method: gptq}}]
calibration: {text: stdlib-train, num_samples: 1, sequence_length: 16}
verify: {num_samples: 1}
"""
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium; the README's test command installs it)")
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """The report directories of a GPTQ int4 compile of tiny-lm and of its evaluation."""
    tmp = tmp_path_factory.mktemp("report-page")
    (tmp / "gptq.yaml").write_text(GPTQ_RECIPE)
    subprocess.run(["slmc", "compile", "-m", "tiny-lm", "-r", "gptq.yaml", "-o", "out", "--report", "compile-report", "-q"],
                   cwd=tmp, check=True, capture_output=True, text=True, timeout=600)
    subprocess.run(["slmc", "eval", "out", "--reference", "tiny-lm", "--text", "stdlib-heldout", "--max-tokens", "64",
                    "--window", "32", "--stride", "16", "--report", "eval-report", "-q"],
                   cwd=tmp, check=True, capture_output=True, text=True, timeout=600)
    return tmp


def page_text(dom: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>|src=\"data:[^\"]*\"", "", dom, flags=re.S))))


def test_compile_report_renders_with_size_quality_speed_and_layers(reports):
    page = reports / "compile-report" / "report.html"
    shot = reports / "compile.png"
    chromium(page, reports, f"--screenshot={shot}", "--window-size=1280,2000")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1280) and pixels.std() > 20, "the screenshot is blank"
    text = page_text(chromium(page, reports, "--dump-dom").stdout)
    assert re.search(r"weights 1\.75 MiB -> 0\.2\d+ MiB: 7\.\d+x smaller", text), text[:2000]
    assert "parameters 459,392 -> 459,392" in text  # int4 codes are not counted as parameters
    assert re.search(r"vs the original \(compile\) cosine 0\.99\d+", text)
    assert "speed not measured" in text
    assert re.search(r"layer format bits bytes before bytes after ratio error", text)
    assert re.search(r"blocks\.0\.attn\.q_proj int4 g32 symmetric 4\.5 65,536 9,216 7\.11x [0-9.e-]+ \(output_error\)", text)
    assert "blocks.0.attn_norm as traced" in text and "(log scale)" in text
    assert "normalization/rotary layers not drawn" in text


def test_eval_report_adds_measured_quality(reports):
    text = page_text(chromium(reports / "eval-report" / "report.html", reports, "--dump-dom").stdout)
    assert re.search(r"perplexity on stdlib-heldout \(eval\) \d+\.\d{4} vs eager model tiny-lm \d+\.\d{4} \([+-]\d+\.\d+%\)", text)
    assert re.search(r"top1 agreement 0\.\d+", text)
    assert "weights 1.75 MiB" in text  # the compile's size section is kept


def test_eval_report_needs_an_artifact(tmp_path):
    result = subprocess.run(["slmc", "eval", "tiny-lm", "--text", "stdlib-heldout", "--report", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "must be an artifact directory" in result.stderr
