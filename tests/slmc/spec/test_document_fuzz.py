"""Property-based fuzzing of the recipe and target-descriptor parsers (hypothesis).

Every generated document either parses or raises the document's typed error (exit code 2) whose
problems each name a key path; nothing else may escape. 1,000+ documents per parser per run.
"""

import copy

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmc.cli.main import cli
from slmc.errors import RecipeError, TargetError
from slmc.spec.recipe import Recipe, recipe_from_document
from slmc.spec.target import TargetDescriptor, descriptor_from_document, load_target
from slmc.spec.yaml_source import YamlSyntaxError, parse_yaml

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["native", "all", "5%", "float16", "int4", "2:4", "+neon", "", "\u202e\u0000", "🙂"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)

VALID_RECIPE = {
    "passes": [{"constant_folding": {"max_growth_bytes": 1024}}, {"cast_weights": {"min_elements": 16}}],
    "verify": {"num_samples": 2, "atol": 1e-3, "gates": {"min_cosine": 0.99}},
}
VALID_TARGET = load_target("arm-cortex-a76").model_dump(mode="json")


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _mutate(document, draw):
    """Replace the value at a random key path with a random value, or add an unknown key."""
    doc = copy.deepcopy(document)
    paths = [p for p in _paths(doc) if p]
    path = draw(st.sampled_from(paths))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if isinstance(parent, dict) and draw(st.booleans()):
        parent[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in parent))] = draw(values)
    else:
        parent[path[-1]] = draw(values)
    return doc


@st.composite
def mutated_documents(draw, valid):
    return _mutate(valid, draw)


def _texts(valid):
    dumped = st.builds(lambda v: yaml.safe_dump(v, allow_unicode=True), values)
    mutated = mutated_documents(valid).map(lambda doc: yaml.safe_dump(doc, allow_unicode=True))
    raw = st.text(max_size=200)
    bombs = st.integers(min_value=3, max_value=9).map(
        lambda n: "a: &a [1,1,1,1,1,1,1,1]\n" + "".join(f"x{i}: &x{i} [" + ",".join([f"*{'a' if i == 0 else f'x{i - 1}'}"] * 8) + "]\n" for i in range(n)))
    odd = st.sampled_from(["", "---\n", "~\n", "[]\n", "!!python/object:os.system x\n", "a: !!binary AAAA\n",
                           "a: 1\na: 2\n", "a: 1\n---\nb: 2\n", "? [a, b]\n: c\n", "\ufeffpasses: []\n"])
    return st.one_of(dumped, mutated, raw, bombs, odd)


def _check(parse, error_type, text, source):
    try:
        doc = parse_yaml(text, source)
    except YamlSyntaxError:
        return
    try:
        parse(doc)
    except error_type as exc:
        assert exc.exit_code == 2
        assert source in str(exc)
        assert exc.problems and all(isinstance(p.path, str) for p in exc.problems)


@FUZZ
@given(_texts(VALID_RECIPE))
def test_recipe_parser_never_escapes_its_error_type(tmp_path_factory, text):
    _check(lambda doc: recipe_from_document(doc, tmp_path_factory.getbasetemp()), RecipeError, text, "fuzz.yaml")


@FUZZ
@given(_texts(VALID_TARGET))
def test_descriptor_parser_never_escapes_its_error_type(text):
    _check(descriptor_from_document, TargetError, text, "fuzz.yaml")


@settings(max_examples=200, deadline=None)
@given(mutated_documents(VALID_RECIPE))
def test_mutated_recipes_name_the_mutated_key(doc):
    try:
        recipe_from_document(parse_yaml(yaml.safe_dump(doc), "m.yaml"), None)
    except RecipeError as exc:
        top = {p.path.split(".")[0] for p in exc.problems}
        # a problem path joins keys with ".", so a mutated key that itself contains "." is named by its first part
        assert top <= {"passes", "verify", ""} | {str(key).split(".")[0] for key in doc}


@pytest.mark.parametrize("kind", ["recipe", "target"])
def test_cli_exit_2_without_traceback_on_bad_documents(tmp_path, kind):
    runner = CliRunner()
    bad = ["a: &a [1,1,1,1,1,1,1,1,1]\n" + "".join(f"b{i}: &b{i} [" + ",".join([f"*{'a' if i == 0 else f'b{i - 1}'}"] * 9) + "]\n" for i in range(7)),
           "verify: {atol: .inf, num_samples: 1e999}\n", "passes: [{constant_folding: {max_growth_bytes: 99999999999999999999999999}}]\n",
           "\u202ename: \u0000\n", "", "kind: [\n"]
    for i, text in enumerate(bad):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(text)
        args = ["recipe", "check", str(path)] if kind == "recipe" else ["targets", "show", str(path)]
        result = runner.invoke(cli, args)
        if kind == "recipe" and text == "":
            assert result.exit_code == 0  # an empty recipe is the empty pass list
            continue
        assert result.exit_code == 2, (text, result.output)
        assert "Traceback" not in result.output and str(path) in result.output


def test_parsed_models_are_the_declared_types():
    assert isinstance(recipe_from_document(parse_yaml(yaml.safe_dump(VALID_RECIPE), "v.yaml"), None), Recipe)
    assert isinstance(descriptor_from_document(parse_yaml(yaml.safe_dump(VALID_TARGET), "t.yaml")), TargetDescriptor)
