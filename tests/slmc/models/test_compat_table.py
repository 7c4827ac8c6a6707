"""The decoder-family table in docs/models.md is the rendering of docs/models-compat.json, never hand-edited."""

import json
from pathlib import Path

import pytest

from slmc.errors import ModelError
from slmc.models.compat_table import BEGIN, END, main, render, replace_section, section

ROOT = Path(__file__).resolve().parents[3]


def test_committed_table_is_the_rendering_of_the_committed_results():
    results = json.loads((ROOT / "docs" / "models-compat.json").read_text())
    assert section((ROOT / "docs" / "models.md").read_text()) == render(results).strip()


def test_render_reports_refusals_as_limits_and_missing_runs(tmp_path):
    results = {"transformers": "5.25.0", "families": {
        "llama": {"config": "LlamaConfig", "transformers_class": "LlamaForCausalLM", "exercises": "GQA",
                  "compile": "ok", "logits_max_abs_error": 2.4e-7, "greedy_8_same": True, "int4_g32": "ok",
                  "passes": {"fuse": "ok (4 sibling groups merged)", "prune_channels": "refused: pass 'prune_channels' failed"}},
        "opt": {"config": "OPTConfig", "exercises": "offsets"}}}
    table = render(results)
    llama = next(line for line in table.splitlines() if line.startswith("| `llama`"))
    assert "| 2.4e-07 | identical | ok |" in llama and "ok (4 sibling groups merged)" in llama
    assert "| refused |" in llama and llama.endswith("prune_channels: pass 'prune_channels' failed |")
    opt = next(line for line in table.splitlines() if line.startswith("| `opt`"))
    assert opt.count("not run") == 13 and opt.endswith("| none found |")

    doc = tmp_path / "models.md"
    doc.write_text(f"# Models\n\n{BEGIN}\nold\n{END}\nafter\n")
    (tmp_path / "r.json").write_text(json.dumps(results))
    assert main([str(tmp_path / "r.json"), str(doc)]) == 0
    assert section(doc.read_text()) == table and doc.read_text().endswith(f"{END}\nafter\n")
    with pytest.raises(ModelError, match="no compatibility section"):
        replace_section("# no markers", table)
    with pytest.raises(ModelError, match="no 'families'"):
        render({"families": {}})
