"""Encoder families a user may bring as a sentence encoder, compiled from a checkpoint folder through the CLI.

Each family is a tiny random config of the installed transformers (2 layers, hidden 64, vocab 4096 = the
fixture LM's tokenizer), saved with ``save_pretrained`` as a sentence-transformers folder (Transformer ->
mean Pooling -> Normalize). ``slmc compile -m FOLDER -r cleanup`` must verify (embedding cosine against
the eager wrapper), and the artifact's embeddings must match transformers' own model, mean-pooled and
normalized as sentence-transformers does, on a padded batch (cosine >= 0.9999). Support is by capability
(``slmc.models.hf_encoders``); a family that does not export or build is refused naming module and op.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner

import slmc
from slmc.cli.main import cli
from slmc.models import FIXTURE_DIR
from slmc.verify.numerics import embedding_cosine

SHARED = dict(vocab_size=4096, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
              max_position_embeddings=128)
SPECIAL_IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
# family -> (config class, settings beyond SHARED (None: the family names its sizes differently), what it exercises)
FAMILIES = {
    "roberta": ("RobertaConfig", dict(SPECIAL_IDS), "positions counted after padding_idx, from the ids"),
    "xlm-roberta": ("XLMRobertaConfig", dict(SPECIAL_IDS), "XLM-R / multilingual-e5 style (RoBERTa embeddings)"),
    "distilbert": ("DistilBertConfig", None, "no token types, sinusoid-free learned positions, fused FFN names"),
    "mpnet": ("MPNetConfig", dict(SPECIAL_IDS), "all-mpnet-base-v2 style: relative attention bias"),
    "electra": ("ElectraConfig", dict(embedding_size=32), "embedding projection (embedding_size != hidden)"),
    "modernbert": ("ModernBertConfig", dict(global_attn_every_n_layers=2, local_attention=4, cls_token_id=1,
                                            sep_token_id=2, **SPECIAL_IDS),
                   "RoPE, GeGLU, alternating local (window 4) / global attention"),
}
FAST = ("roberta",)
# Families that load and trace but do not build, with what names the reason (measured).
REFUSED = {
    "deberta-v2": ("DebertaV2Config", dict(relative_attention=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
                                           position_buckets=16, **SPECIAL_IDS),
                   "DeBERTa-v3 style: disentangled relative attention repeats its position embeddings by the "
                   "symbolic batch size, which TVM 0.27's tile cannot take"),
}


def family_config(family: str) -> transformers.PretrainedConfig:
    class_name, extra, _ = FAMILIES.get(family) or REFUSED[family]
    cls = getattr(transformers, class_name)
    if extra is None:  # DistilBERT
        return cls(vocab_size=4096, dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=128)
    return cls(**SHARED, **extra)


def encoder_folder(family: str, folder: Path) -> torch.nn.Module:
    """A seeded random sentence-transformers folder of ``family`` (mean pooling, normalized; the base model saved,
    as sentence-transformers saves it); returns the model."""
    config = family_config(family)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config).eval()
    model.save_pretrained(folder)
    shutil.copyfile(FIXTURE_DIR / "tokenizer.json", folder / "tokenizer.json")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (folder / "2_Normalize").mkdir()
    return model


def _reference(model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """transformers' model, mean-pooled over real tokens and L2-normalized (sentence-transformers' pipeline)."""
    with torch.no_grad():
        hidden = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    keep = torch.from_numpy(mask).unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * keep).sum(1) / keep.sum(1), dim=1).numpy()


@pytest.mark.parametrize("family", [pytest.param(f, marks=[] if f in FAST else [pytest.mark.slow]) for f in FAMILIES])
def test_encoder_family_compiles_and_matches_transformers(family, tmp_path):
    folder = tmp_path / family
    hf = encoder_folder(family, folder)
    result = CliRunner().invoke(cli, ["compile", "-q", "--json", "-m", str(folder), "-o", str(tmp_path / "out"),
                                      "-r", "cleanup"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["verification"]["passed"]

    model = slmc.load(report["artifact"])
    assert model.manifest.task == "embedding"
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 4096, (3, 11), dtype=np.int64)
    mask = np.ones((3, 11), dtype=np.int64)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = hf.config.pad_token_id or 0  # padding as a tokenizer writes it
    cosine = embedding_cosine(model.run_numpy(ids, mask)[0], _reference(hf, ids, mask))
    assert cosine["min_cosine"] >= 0.9999 and cosine["rows"] == 3, cosine


@pytest.mark.slow
def test_deberta_v3_relative_attention_is_refused_naming_node_op_and_source(tmp_path):
    encoder_folder("deberta-v2", tmp_path / "deberta")
    result = CliRunner().invoke(cli, ["compile", "-q", "-m", str(tmp_path / "deberta"), "-o", str(tmp_path / "out"),
                                      "-r", "cleanup"])
    assert result.exit_code == 1, result.output
    assert "failed converting node 'repeat' (aten.repeat.default) at " in result.output
    assert "modeling_deberta_v2.py" in result.output and "relax.op.tile" in result.output
