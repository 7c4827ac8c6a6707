"""A normal run prints only slmc's own output: no TVM log line, no transformers FutureWarning (issue 16,
point 6); ``--debug`` shows TVM's. Run as subprocesses: TVM's C++ log goes to the process's real stderr,
which click's CliRunner would not see (and pytest's config ignores FutureWarnings)."""

import os
import subprocess
import sys

import pytest

from slmc.backend.library_output import KNOWN_NOTICES, native_stderr, set_debug
from slmc.models import FIXTURE_DIR

TVM_TAKE = "Fast mode segfaults when there are out-of-bounds indices"
HF_CACHE = "`past_key_values` is deprecated"
CHEAP_RECIPE = "passes: [{dead_code_elimination: {}}]\nverify: {num_samples: 1}\n"


def slmc(*args, cwd):
    result = subprocess.run([sys.executable, "-m", "slmc", *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                            env={k: v for k, v in os.environ.items() if k != "SLMC_CACHE_DIR"})
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_a_normal_compile_prints_no_tvm_log_and_debug_shows_it(tmp_path):
    (tmp_path / "cheap.yaml").write_text(CHEAP_RECIPE)
    normal = slmc("compile", "-m", "tiny-lm", "-r", "cheap.yaml", "-o", "normal", "-q", cwd=tmp_path)
    assert TVM_TAKE not in normal and "Warning" not in normal and normal.startswith("compiled tiny-lm"), normal
    debug = slmc("--debug", "compile", "-m", "tiny-lm", "-r", "cheap.yaml", "-o", "debug", "-q", cwd=tmp_path)
    assert TVM_TAKE in debug


@pytest.mark.slow
def test_the_default_compile_prints_only_slmc_output(tmp_path):
    output = slmc("compile", "-o", "tmp", cwd=tmp_path)
    assert TVM_TAKE not in output and "Warning" not in output and output.startswith("compiled fixture-lm"), output


def test_eval_of_a_hugging_face_model_prints_no_future_warning(tmp_path):
    output = slmc("eval", str(FIXTURE_DIR), "--text", "stdlib-heldout", "--max-tokens", "48", "--window", "32",
                  "--stride", "16", "-q", cwd=tmp_path)
    assert HF_CACHE not in output and "FutureWarning" not in output and "Warning" not in output, output
    assert output.startswith("eager model fixture_lm: perplexity"), output


def _write_to_fd2(text):
    os.write(2, text.encode())


def test_native_stderr_drops_only_known_notices_unless_debug(capfd):
    notice = f"[12:00:00] transform.h:1261: Warning: {TVM_TAKE}. Make sure input indices are in bound\n"
    assert any(p.search(notice) for p in KNOWN_NOTICES.values())
    with native_stderr():
        _write_to_fd2(notice + "an unknown library line\n")
    assert capfd.readouterr().err == "an unknown library line\n"
    set_debug(True)
    try:
        with pytest.raises(RuntimeError), native_stderr():
            _write_to_fd2(notice)
            raise RuntimeError("the block failed")
    finally:
        set_debug(False)
    assert capfd.readouterr().err == notice
