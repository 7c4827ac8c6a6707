"""manifest.json: typed (slmc.artifact.manifest), versioned, validated on read, described by a generated JSON schema."""

import json
import shutil

import jsonschema
import pytest

from slmc.artifact.layout import MANIFEST, read_manifest
from slmc.artifact.manifest import FORMAT_VERSION, Manifest, Verification, manifest_schema
from slmc.errors import ArtifactError


@pytest.fixture
def copy(cached_compile, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(cached_compile.artifact, target)
    return target


def _rewrite(path, change):
    data = json.loads((path / MANIFEST).read_text())
    change(data)
    (path / MANIFEST).write_text(json.dumps(data))


def test_a_compiled_manifest_validates_against_the_generated_schema(cached_compile):
    data = json.loads((cached_compile.artifact / MANIFEST).read_text())
    jsonschema.validate(data, manifest_schema())
    assert data["format_version"] == FORMAT_VERSION
    assert Manifest.model_json_schema()["properties"]["format_version"]["const"] == FORMAT_VERSION


def test_read_manifest_returns_what_the_compile_returned(cached_compile):
    manifest = read_manifest(cached_compile.artifact)
    assert manifest == cached_compile.result.manifest
    assert manifest.model.name == "tiny-lm" and manifest.target.name == "host"
    assert manifest.verification.passed and {g.gate for g in manifest.verification.checks()} >= {"artifact_vs_eager", "decode"}


@pytest.mark.parametrize("version, words", [(1, "written by an older slmc"), (FORMAT_VERSION + 1, "written by a newer slmc"),
                                            ("2", "unsupported manifest format_version '2'")])
def test_another_format_version_is_an_artifact_error(copy, version, words):
    _rewrite(copy, lambda m: m.update(format_version=version))
    with pytest.raises(ArtifactError, match=words) as err:
        read_manifest(copy)
    assert str(copy / MANIFEST) in str(err.value)


def test_a_damaged_field_is_named(copy):
    _rewrite(copy, lambda m: m["weights"].update(count="many"))
    with pytest.raises(ArtifactError, match=r"manifest.json is not a valid slmc manifest: weights\.count: "):
        read_manifest(copy)


def test_an_unknown_key_is_refused(copy):
    _rewrite(copy, lambda m: m["verification"].update(verdict="fine"))
    with pytest.raises(ArtifactError, match=r"verification\.verdict: Extra inputs are not permitted"):
        read_manifest(copy)


def test_a_manifest_that_is_not_an_object_is_an_artifact_error(copy):
    (copy / MANIFEST).write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="a manifest is a JSON object, found list"):
        read_manifest(copy)


def test_pending_verification():
    pending = Verification.skipped("pending", passed=False)
    assert pending.pending and not Verification.skipped("disabled").pending


def test_an_int8_kv_cache_under_the_copy_contract_is_refused_as_slmc_run_refuses_it():
    from pydantic import ValidationError

    from slmc.artifact.manifest import KVCacheInfo

    shape = {"layers": 2, "kv_heads": 4, "head_dim": 32, "max_context": 256}
    assert KVCacheInfo(**shape, mode="resident", dtype="int8").spec().dtype == "int8"
    with pytest.raises(ValidationError, match="kv_cache.dtype int8 needs mode resident"):
        KVCacheInfo(**shape, mode="copy", dtype="int8")
