"""The tuning database: location and keys, `slmc tune` records, and compile applying them."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from slmc.errors import InputError, ModelError
from slmc.graph.ir import ModelSpec
from slmc.backend.tuning_db import DATABASE_ENV, RECORDS, database_dirs, target_key, user_database_root


class OneLinear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(32, 16)

    def forward(self, x):
        return torch.relu(self.linear(x))


def _spec():
    torch.manual_seed(0)
    return ModelSpec(OneLinear().eval(), (torch.randn(2, 32),), name="one-linear")


@pytest.fixture()
def recipe(tmp_path):
    path = tmp_path / "fp32.yaml"
    path.write_text("passes: []\nverify: {num_samples: 1, atol: 1.0e-4}\n")
    return path


def test_database_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(DATABASE_ENV, str(tmp_path / "env"))
    assert user_database_root() == tmp_path / "env"
    assert user_database_root(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv(DATABASE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert user_database_root() == tmp_path / "cache" / "slmc" / "tuning"


def test_a_database_path_that_is_a_file_is_rejected(tmp_path, monkeypatch):
    bad = tmp_path / "not-a-dir"
    bad.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        user_database_root(bad)
    monkeypatch.setenv(DATABASE_ENV, str(bad))
    with pytest.raises(InputError, match=f"not-a-dir.*\\${DATABASE_ENV}"):
        user_database_root()


def test_target_key_follows_the_resolved_tvm_target(host_target):
    from slmc.spec.target import load_target

    assert target_key(host_target) == target_key(load_target("host"))
    assert target_key(host_target) != target_key(load_target("arm-cortex-a76"))
    assert target_key(host_target).startswith("llvm-")


def test_user_records_are_looked_up_before_shipped_ones(tmp_path, monkeypatch, host_target):
    import slmc.backend.tuning_db as tuning

    monkeypatch.setattr(tuning, "shipped_database_root", lambda: tmp_path / "shipped")
    assert database_dirs(host_target, tmp_path / "user") == []
    for root in ("user", "shipped"):
        (tmp_path / root / target_key(host_target)).mkdir(parents=True)
        (tmp_path / root / target_key(host_target) / RECORDS).write_text("[]\n")
    assert database_dirs(host_target, tmp_path / "user") == [tmp_path / root / target_key(host_target)
                                                             for root in ("user", "shipped")]


def test_a_damaged_database_is_an_input_error(tmp_path, monkeypatch, recipe):
    import slmc
    from slmc.spec.target import load_target

    directory = tmp_path / "db" / target_key(load_target("host"))
    directory.mkdir(parents=True)
    (directory / RECORDS).write_text("{this is not json")
    (directory / "database_workload.json").write_text("")
    monkeypatch.setenv(DATABASE_ENV, str(tmp_path / "db"))
    with pytest.raises(InputError, match="cannot be read"):
        slmc.compile(_spec(), str(recipe), "host", tmp_path / "out")


def test_tune_rejects_bad_settings_and_unknown_models(tmp_path, recipe):
    from slmc.driver.tune import tune

    with pytest.raises(InputError, match="--trials"):
        tune(_spec(), str(recipe), "host", trials=0, db=tmp_path / "db")
    with pytest.raises(InputError, match="--budget-minutes"):
        tune(_spec(), str(recipe), "host", budget_minutes=0, db=tmp_path / "db")
    with pytest.raises(ModelError):
        tune("no-such-model", str(recipe), "host", trials=1, db=tmp_path / "db")
    result = CliRunner().invoke(__import__("slmc.cli.main", fromlist=["cli"]).cli,
                                ["tune", "fixture-lm", "-r", str(recipe), "-t", "adreno-740", "--db", str(tmp_path / "db")])
    assert result.exit_code == 2 and "CPU targets only" in result.output


@pytest.mark.slow
def test_tune_writes_records_and_compile_applies_them(tmp_path, monkeypatch, recipe):
    import slmc
    from slmc.driver.tune import tune

    report = tune(_spec(), str(recipe), "host", trials=2, db=tmp_path / "db")
    assert report["tuned"] == 1 and report["kernels"][0]["static"]
    assert report["builder"]["built"] >= 1
    records = (tmp_path / "db" / report["target_key"] / RECORDS).read_text().splitlines()
    assert records and all(json.loads(line) for line in records)
    again = tune(_spec(), str(recipe), "host", trials=2, db=tmp_path / "db")  # records are reused
    assert again["tuned"] == 0 and again["kernels"][0]["skipped"] == "already in the database"

    monkeypatch.setenv(DATABASE_ENV, str(tmp_path / "db"))
    result = slmc.compile(_spec(), str(recipe), "host", tmp_path / "tuned")
    tuning = result.manifest.tuning
    assert tuning["kernels_from_database"] == [report["kernels"][0]["name"]]
    assert result.verification.passed
