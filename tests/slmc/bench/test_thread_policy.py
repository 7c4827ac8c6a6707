"""`slmc bench` thread policies: the fair default forces nothing; a common policy is explicit and recorded."""

from __future__ import annotations

import pytest

from slmc.bench.thread_policy import THREAD_VARIABLES, from_json, thread_policy
from slmc.errors import InputError


def test_engine_default_sets_nothing_and_removes_inherited_thread_variables(monkeypatch):
    for name in THREAD_VARIABLES:  # only what this test sets is inherited (an earlier test or import may set some:
        monkeypatch.delenv(name, raising=False)  # train_fixture_lm sets OMP_NUM_THREADS=1 when imported)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    policy = thread_policy("engine-default")
    env = policy.child_env()
    assert not any(k in env for k in THREAD_VARIABLES)
    record = policy.to_json()
    assert record == {"name": "engine-default", "threads": None, "passive_wait": False, "env": {},
                      "removed_from_env": ["OMP_WAIT_POLICY"], "common": False, "override": False}
    assert from_json(record) == policy


def test_common_passive_is_reported_as_common():
    policy = thread_policy("common-passive", 3)
    record = policy.to_json()
    assert record["common"] and record["threads"] == 3 and record["passive_wait"]
    assert policy.child_env()["OMP_WAIT_POLICY"] == "PASSIVE" and policy.child_env()["TVM_NUM_THREADS"] == "3"


def test_a_thread_override_is_one_instances_not_a_common_policy():
    one = thread_policy("engine-default").with_threads(1)
    record = one.to_json()
    assert record["threads"] == 1 and record["override"] and not record["common"] and not record["passive_wait"]
    assert one.child_env()["TVM_NUM_THREADS"] == one.child_env()["OMP_NUM_THREADS"] == "1"
    assert from_json(record) == one
    passive = thread_policy("common-passive", 2).with_threads(1)
    assert passive.passive and passive.child_env()["TVM_THREAD_POOL_SPIN_COUNT"] == "0" and passive.threads == 1


@pytest.mark.parametrize("name, threads, message", [
    ("engine-defualt", None, "did you mean 'engine-default'"),
    ("engine-default", 2, "common thread policy only"),
    ("common-passive", 0, "at least 1"),
])
def test_bad_policies(name, threads, message):
    with pytest.raises(InputError, match=message):
        thread_policy(name, threads)
