"""What ``slmc.spec.yaml_source`` and its parser (``slmc.spec.yaml_parse``) share: key paths, the limits of a
document and the error a rejected one raises. A module of its own so that the parser, imported only when a
document is parsed, and ``yaml_source`` do not import each other."""

from __future__ import annotations

from slmc.errors import FieldProblem

KeyPath = tuple[str | int, ...]

MAX_NODES = 100_000  # after alias expansion: a "billion laughs" document stops here
MAX_DEPTH = 64
MAX_BYTES = 4 * 1024 * 1024


class YamlSyntaxError(ValueError):
    """The text is not a YAML document slmc accepts; carries a ``FieldProblem``."""

    def __init__(self, problem: FieldProblem):
        self.problem = problem
        super().__init__(problem.message)
