"""``slmc search`` on the fixture LM: the acceptance (5% perplexity budget on host), Ray, budgets.

One small space is searched once per module (4 candidates, 2,000 tokens per trial, 2 local
workers) and reused: the chosen recipe is compiled on its own and re-measured, and the same search
on a local Ray instance (started here, stopped by its process id) must give the same front.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import slmc
from slmc.cli.main import cli
from slmc.verify.evaluation import document_tokens, perplexity
from slmc.search import Budget, EvalSettings, SearchSpace, search
from slmc.search.latency import decode_ms
from slmc.search.report import write_report
from slmc.data.texts import load_texts

pytestmark = pytest.mark.slow

SPACE = SearchSpace(sparsities=(0.0, 0.5), bits=(32, 4), group_sizes=(32,), lowrank_ratios=(0.0,))
EVAL = EvalSettings(max_tokens=2000)
BUDGET = Budget(max_ppl_increase=0.05)


@pytest.fixture(scope="module")
def local_search(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    result = search("fixture-lm", "host", BUDGET, out, space=SPACE, evaluation=EVAL, workers=2, latency="none")
    return result, write_report(result, out)


def test_chosen_recipe_meets_the_budget_when_compiled_on_its_own(local_search, tmp_path):
    result, files = local_search
    assert len(result.points) == 4 and result.front
    by_id = {p["id"]: p for p in result.points}
    assert by_id["s0.500-b32-r0.000"]["ppl_increase"] > 0.05  # the budget rules something out
    assert result.chosen == "s0.000-b04-g0032-r0.000"
    assert "data:image/png;base64," in files["plot"].read_text()
    assert json.loads(files["front"].read_text())["chosen"] == result.chosen

    compiled = slmc.compile(None, files["chosen"], None, tmp_path / "artifact")  # model and target from the recipe
    gate = next(g for g in compiled.manifest.verification.gates if g.gate == "max_perplexity_increase")
    assert gate.passed and gate.threshold == 0.05
    artifact = slmc.load(compiled.artifact)  # re-measured here, against the search's baseline
    docs = document_tokens(load_texts(EVAL.text), artifact.tokenizer, EVAL.max_tokens)
    ppl = perplexity(artifact.step, artifact.kv_cache, docs, EVAL.window, EVAL.stride)["perplexity"]
    assert ppl / by_id[result.chosen]["baseline_perplexity"] - 1.0 <= 0.05
    assert decode_ms(compiled.artifact, context=32, repeats=3) > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def ray_head(tmp_path):
    pytest.importorskip("ray", reason="install the test extras: pip install -e '.[test]'")
    port = _free_port()
    log = tmp_path / "ray.log"
    with log.open("w") as sink:
        head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
                                 "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", "--block"],
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "--block" not in log.read_text() and head.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert head.poll() is None, log.read_text()
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()  # `ray start --block` stops the head's processes on SIGTERM
        head.wait(timeout=60)


def test_ray_run_gives_the_same_front(local_search, ray_head, tmp_path):
    local, _ = local_search
    remote = search("fixture-lm", "host", BUDGET, tmp_path, space=SPACE, evaluation=EVAL, ray_address=ray_head, latency="none")
    assert remote.front == local.front and remote.chosen == local.chosen
    keys = ("id", "perplexity", "ppl_increase", "size_bytes", "on_front")
    assert [{k: p[k] for k in keys} for p in remote.points] == [{k: p[k] for k in keys} for p in local.points]


def test_impossible_budget_exits_1_naming_the_budget(tmp_path):
    result = CliRunner().invoke(cli, ["search", "fixture-lm", "-t", "host", "--max-ppl-increase", "0.05",
                                      "--max-size-bytes", "1000", "--sparsity", "0", "--bits", "8", "--group-sizes", "pc",
                                      "--lowrank-ratios", "0", "--max-tokens", "200", "--latency", "none",
                                      "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "BudgetNotMetError"
    assert error["budgets"][0]["option"] == "--max-size-bytes" and error["budgets"][0]["best_reached"] > 1000
    assert "--max-size-bytes 1000" in error["message"]
