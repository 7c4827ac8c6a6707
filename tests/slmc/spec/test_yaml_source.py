import pytest

from slmc.spec.yaml_source import YamlSyntaxError, parse_yaml


def test_lines_of_keys_and_items():
    doc = parse_yaml("a: 1\nb:\n  - x: 2\n  - y: 3\n", "t.yaml")
    assert doc.data == {"a": 1, "b": [{"x": 2}, {"y": 3}]}
    assert doc.line_of(("a",)) == 1
    assert doc.line_of(("b", 1, "y")) == 4
    assert doc.line_of(("b", 1, "y", "missing")) == 4  # falls back to the longest known prefix


def test_duplicate_key_is_rejected_with_its_line():
    with pytest.raises(YamlSyntaxError) as err:
        parse_yaml("a: 1\nb: 2\na: 3\n", "t.yaml")
    assert "duplicate key 'a'" in err.value.problem.message
    assert err.value.problem.line == 3


def test_malformed_yaml_and_several_documents():
    with pytest.raises(YamlSyntaxError, match="not valid YAML"):
        parse_yaml("a: [1, 2\n", "t.yaml")
    with pytest.raises(YamlSyntaxError, match="not valid YAML"):
        parse_yaml("a: 1\n---\nb: 2\n", "t.yaml")


def test_python_tags_are_not_constructed():
    with pytest.raises(YamlSyntaxError):
        parse_yaml("a: !!python/object/apply:os.system ['true']\n", "t.yaml")


def test_empty_document_is_none():
    assert parse_yaml("", "t.yaml").data is None
