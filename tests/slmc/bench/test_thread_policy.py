"""`slmc bench` thread policies: the fair default forces nothing; a common policy is explicit and recorded."""

from __future__ import annotations

import pytest

from slmc.bench.thread_policy import THREAD_VARIABLES, from_json, thread_policy
from slmc.errors import InputError


def test_engine_default_sets_nothing_and_removes_inherited_thread_variables(monkeypatch):
    # a runtime loaded earlier in this process sets TVM_NUM_THREADS (slmc.artifact.tvm_runtime.use_physical_cores)
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    policy = thread_policy("engine-default")
    env = policy.child_env()
    assert not any(k in env for k in THREAD_VARIABLES)
    record = policy.to_json()
    assert record == {"name": "engine-default", "threads": None, "passive_wait": False, "env": {},
                      "removed_from_env": ["OMP_WAIT_POLICY"], "common": False}
    assert from_json(record) == policy


def test_common_passive_is_reported_as_common():
    policy = thread_policy("common-passive", 3)
    record = policy.to_json()
    assert record["common"] and record["threads"] == 3 and record["passive_wait"]
    assert policy.child_env()["OMP_WAIT_POLICY"] == "PASSIVE" and policy.child_env()["TVM_NUM_THREADS"] == "3"


@pytest.mark.parametrize("name, threads, message", [
    ("engine-defualt", None, "did you mean 'engine-default'"),
    ("engine-default", 2, "common thread policy only"),
    ("common-passive", 0, "at least 1"),
])
def test_bad_policies(name, threads, message):
    with pytest.raises(InputError, match=message):
        thread_policy(name, threads)
