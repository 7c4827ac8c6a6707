"""Recipes: what to do to a model, parsed from YAML into validated models before any model loads.

A recipe has an optional ``model`` and ``target``, an ordered ``passes`` list (each item
``{pass_name: {settings}}``), ``calibration`` data and ``verify`` tolerances and gates. Every error
names the file, the key path, the line, the value found and what was expected.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, model_validator

from slmc.errors import FieldProblem, RecipeError, RecipeTargetMismatchError, did_you_mean
from slmc.spec.pass_registry import PassStep, get_pass, order_problems, registered_passes
from slmc.spec.kv_cache_dtype import KvCacheDtype
from slmc.spec.strict_model import StrictModel, problems_from_validation
from slmc.spec.target import TargetDescriptor
from slmc.data.texts import is_text_set
from slmc.spec.yaml_source import YamlDocument, YamlSyntaxError, parse_yaml, read_yaml


class Calibration(StrictModel):
    """Calibration data: exactly one of a UTF-8 text file or a tensor file (.npy / .safetensors).

    Relative paths are relative to the recipe file. Text is tokenized with the model's tokenizer
    and cut into ``num_samples`` windows of ``sequence_length`` tokens.
    """

    text: str | None = Field(None, min_length=1, description="path to a UTF-8 text file, or a built-in text set (stdlib-train)")
    tensors: str | None = Field(None, min_length=1, description="path to a .npy or .safetensors file of inputs")
    num_samples: int = Field(16, ge=1, le=100_000)
    sequence_length: int = Field(128, ge=2, le=1_048_576)
    seed: int = Field(0, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _one_source(self) -> Calibration:
        if (self.text is None) == (self.tensors is None):
            raise ValueError("give exactly one of 'text' or 'tensors'")
        if self.tensors is not None and not self.tensors.endswith((".npy", ".safetensors")):
            raise ValueError("'tensors' must be a .npy or .safetensors file")
        return self


def _fraction(value: Any) -> Any:
    """``"5%"`` -> 0.05; numbers pass through (as fractions)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100.0
        except ValueError as exc:
            raise ValueError(f"expected a percentage such as '5%', found {value!r}") from exc
    return value


Fraction = Annotated[float, BeforeValidator(_fraction), Field(ge=0.0, le=100.0)]


class Gates(StrictModel):
    """Quality gates of the compressed model against the original.

    ``min_cosine``, ``min_top1_agreement`` and ``max_abs_error`` are measured on the verification
    samples; ``max_perplexity_increase`` (a fraction or ``"5%"``) on ``verify.text`` with the
    compiled artifact against the original eager model (causal LMs only).
    """

    min_cosine: float | None = Field(None, ge=-1.0, le=1.0, description="min cosine similarity of outputs")
    min_top1_agreement: float | None = Field(None, ge=0.0, le=1.0, description="min share of equal argmax")
    max_abs_error: float | None = Field(None, ge=0.0, description="max abs output error vs the original")
    max_perplexity_increase: Fraction | None = Field(None, description="max relative perplexity increase on verify.text")
    # NPU targets only (slmc.npu.gates): measured on the NPU partitions by Vela where the target names it
    min_npu_mac_fraction: float | None = Field(None, ge=0.0, le=1.0, description="NPU targets: min share of the linear "
                                               "layers' MACs in partitions the NPU runs (Vela compiled them)")
    max_npu_cycles: int | None = Field(None, ge=1, description="NPU targets: max NPU cycles of all partitions at the "
                                       "report's tokens (Vela's estimate; slmc's where the target has no Vela)")
    max_npu_latency_ms: float | None = Field(None, gt=0.0, description="NPU targets: max estimated NPU time of all "
                                             "partitions at the report's tokens, in ms (Vela's inference_time)")
    npu_sram_fit: bool | None = Field(None, description="NPU targets: true requires every partition to fit the "
                                      "descriptor's memory.sram_bytes (Vela's SRAM used; slmc's fit without Vela)")


class Verify(StrictModel):
    """How the compiled artifact is checked: against eager execution of the final graph."""

    enabled: bool = True
    num_samples: int = Field(4, ge=1, le=1000)
    atol: float = Field(1e-4, ge=0.0, le=1e6)
    rtol: float = Field(0.0, ge=0.0, le=1e6)
    gates: Gates = Gates()
    text: str | None = Field(None, min_length=1, description="UTF-8 text file (relative to the recipe) or built-in text set, for perplexity gates")
    max_eval_tokens: int = Field(4096, ge=2, le=10_000_000)
    window: int = Field(256, ge=2, le=1_048_576)
    stride: int = Field(128, ge=1, le=1_048_576)
    require_execution: bool = Field(False, description="fail the build (exit 1) if the artifact is not executed anywhere "
                                                       "(natively or on a --device); else its gates are measured on the host")

    @model_validator(mode="after")
    def _text_for_perplexity(self) -> Verify:
        if self.gates.max_perplexity_increase is not None and self.text is None:
            raise ValueError("gates.max_perplexity_increase needs verify.text (the evaluation text)")
        if self.stride >= self.window:
            raise ValueError(f"stride {self.stride} must be smaller than window {self.window}")
        return self


class KvCacheSetting(StrictModel):
    """How a causal LM's resident KV cache is stored (``slmc.graph.kv_cache``): ``float32``; ``float16`` (half the
    bytes, llama.cpp's default cache type; converted to float32 inside attention); or ``int8`` with one
    float32 scale per (layer, head, position) (``granularity: per_token_head``; symmetric, absmax / 127), quantized
    as the kernels write it and dequantized inside attention. Needs a target kind whose attention reads the
    resident cache (``Backend.quantized_kv_cache``)."""

    dtype: KvCacheDtype = Field("float32", description="dtype the KV cache is stored in")
    granularity: Literal["per_token_head"] = Field(
        "per_token_head", description="int8: one scale per (layer, KV head, position), i.e. per row of head_dim numbers")


class RecipeDocument(StrictModel):
    """The top level of a recipe file."""

    model: str | None = Field(None, min_length=1, description="built-in name or 'package.module:factory'")
    target: str | None = Field(None, min_length=1, description="built-in target name or descriptor path")
    max_context: int | None = Field(None, ge=16, le=1_048_576,
                                    description="causal LMs: longest context (tokens) the artifact accepts; "
                                                "default: what the model supports and the target's memory holds")
    kv_cache: KvCacheSetting = Field(KvCacheSetting(), description="causal LMs: how the KV cache is stored")
    passes: list[dict[str, dict[str, Any] | None]] = Field(default_factory=list)
    calibration: Calibration | None = None
    verify: Verify = Verify()


class Recipe:
    """A validated recipe: the document plus each pass's validated config, in order."""

    def __init__(self, document: RecipeDocument, steps: list[PassStep], source: str, base_dir: Path):
        self.document = document
        self.steps = steps
        self.source = source
        self.base_dir = base_dir

    @property
    def verify(self) -> Verify:
        return self.document.verify

    @property
    def kv_cache(self) -> KvCacheSetting:
        return self.document.kv_cache

    @property
    def calibration(self) -> Calibration | None:
        return self.document.calibration

    def resolve_path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.base_dir / path

    def evaluation_text(self) -> str | Path:
        """``verify.text``: a built-in text set name, or the file resolved against the recipe."""
        text = self.verify.text
        if text is None:
            raise ValueError("the recipe has no verify.text")
        return text if is_text_set(text) else self.resolve_path(text)

    def normalized(self) -> dict[str, Any]:
        """Every setting with defaults filled in: what the manifest records and the cache keys on."""
        data = self.document.model_dump(mode="json")
        data["passes"] = [step.to_json() for step in self.steps]
        return data


def _pass_steps(doc: YamlDocument) -> tuple[list[PassStep], list[FieldProblem]]:
    """Validate each ``passes`` item against its registered config (independently of the rest)."""
    items = doc.data.get("passes") or []
    if not isinstance(items, list):
        return [], []  # the document schema reports the wrong type
    steps: list[PassStep] = []
    problems: list[FieldProblem] = []
    for i, item in enumerate(items):
        path = ("passes", i)
        if not isinstance(item, dict) or len(item) != 1:
            problems.append(FieldProblem(f"passes.{i}", "each pass is a mapping with exactly one key, the pass name",
                                         doc.line_of(path), item))
            continue
        (name, settings), = item.items()
        definition = get_pass(str(name))
        if definition is None:
            known = registered_passes()
            problems.append(FieldProblem(f"passes.{i}", f"unknown pass '{name}'{did_you_mean(str(name), known)}; "
                                                        f"valid passes: {', '.join(known)}",
                                         doc.line_of(path + (str(name),))))
            continue
        if settings is not None and not isinstance(settings, dict):
            problems.append(FieldProblem(f"passes.{i}.{name}", "pass settings must be a mapping (or empty)",
                                         doc.line_of(path + (str(name),)), settings))
            continue
        try:
            steps.append(PassStep(str(name), definition.config.model_validate(settings or {})))
        except ValidationError as exc:
            problems.extend(problems_from_validation(exc, doc, definition.config, prefix=path + (str(name),)))
    return steps, problems


def _check_files(doc: YamlDocument, recipe: Recipe) -> list[FieldProblem]:
    """Files the recipe names (calibration data, evaluation text) must exist."""
    named = []
    cal = recipe.calibration
    if cal is not None:
        key = "text" if cal.text is not None else "tensors"
        if not is_text_set(cal.text):
            named.append((("calibration", key), cal.text if cal.text is not None else cal.tensors))
    if recipe.verify.text is not None and not is_text_set(recipe.verify.text):
        named.append((("verify", "text"), recipe.verify.text))
    for i, step in enumerate(recipe.steps):
        named.extend(((("passes", i, step.name, key)), value) for key, value in step.config.text_files().items()
                     if not is_text_set(value))
    problems = []
    for key_path, value in named:
        path = recipe.resolve_path(value)
        if not path.is_file():
            problems.append(FieldProblem(".".join(map(str, key_path)), f"file not found: {path}", doc.line_of(key_path), value))
    return problems


def _check_calibration(doc: YamlDocument, recipe: Recipe) -> list[FieldProblem]:
    """Passes whose settings need calibration data get it from the recipe's ``calibration``."""
    if recipe.calibration is not None:
        return []
    problems = []
    for i, step in enumerate(recipe.steps):
        reason = step.config.needs_calibration()
        if reason is not None:
            problems.append(FieldProblem(f"passes.{i}.{step.name}", f"{reason}: add a 'calibration' section to the recipe",
                                         doc.line_of(("passes", i, step.name))))
    return problems


def recipe_from_document(doc: YamlDocument, base_dir: Path) -> Recipe:
    """Validate a parsed document as a recipe: schema, every pass config, pass order, files.

    All problems found are reported together.
    """
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise RecipeError(doc.source, [FieldProblem("", f"expected a mapping of recipe keys, found {type(doc.data).__name__}")])
    problems: list[FieldProblem] = []
    try:
        raw = RecipeDocument.model_validate(doc.data)
    except ValidationError as exc:
        raw = None
        # items of the pass list are checked by _pass_steps; a top-level key that merely starts with
        # "passes." (e.g. an unknown key "passes.") is not one of them
        problems.extend(p for p in problems_from_validation(exc, doc, RecipeDocument)
                        if not p.path.startswith("passes.") or p.path in doc.data)
    steps, pass_problems = _pass_steps(doc)
    problems.extend(pass_problems)
    if not pass_problems:
        for index, message in order_problems([s.name for s in steps]):
            problems.append(FieldProblem(f"passes.{index}", f"pass order: {message}", doc.line_of(("passes", index))))
    if raw is not None:
        recipe = Recipe(raw, steps, doc.source, base_dir)
        problems.extend(_check_files(doc, recipe))
        problems.extend(_check_calibration(doc, recipe))
    if problems or raw is None:
        raise RecipeError(doc.source, problems)
    return recipe


BUILTIN_RECIPES = ("default", "cleanup")


def load_recipe(ref: str | Path | Recipe | None) -> Recipe:
    """A recipe from a file path, a built-in name (``default``: int4 + perplexity gate; ``cleanup``: lossless), or ``None`` for ``default``."""
    if isinstance(ref, Recipe):
        return ref
    name = "default" if ref is None else str(ref)
    try:
        if name in BUILTIN_RECIPES and not Path(name).exists():
            text = (resources.files("slmc.recipes") / f"{name}.yaml").read_text(encoding="utf-8")
            return recipe_from_document(parse_yaml(text, f"<built-in recipe {name}>"), Path.cwd())
        path = Path(name)
        if not path.is_file():
            raise RecipeError(name, [FieldProblem("", f"recipe file not found{did_you_mean(name, BUILTIN_RECIPES)}; "
                                                      f"built-in recipes: {', '.join(BUILTIN_RECIPES)}")])
        return recipe_from_document(read_yaml(path), path.resolve().parent)
    except YamlSyntaxError as exc:
        raise RecipeError(name, [exc.problem]) from None


def _target_problems(recipe: Recipe, target: TargetDescriptor) -> list[FieldProblem]:
    """One problem per setting of a step the target cannot honour, naming what the target offers."""
    return [FieldProblem(f"passes.{i}.{step.name}.{field_name}", f"{message} (target '{target.name}')")
            for i, step in enumerate(recipe.steps) for field_name, message in step.config.target_problems(target)]


def fitting_builtin_recipes(target: TargetDescriptor) -> list[str]:
    """The built-in recipes whose every step the target can honour."""
    return [name for name in BUILTIN_RECIPES if not _target_problems(load_recipe(name), target)]


def check_against_target(recipe: Recipe, target: TargetDescriptor) -> None:
    """Raise ``RecipeTargetMismatchError`` (a recipe problem, also a ``TargetError``) naming each step's
    setting the target lacks, what the target offers, and the built-in recipes that fit it."""
    problems = _target_problems(recipe, target)
    if problems:
        raise RecipeTargetMismatchError(recipe.source, target.name, problems, fitting_builtin_recipes(target))
