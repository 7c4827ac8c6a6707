"""``slmc search``: explore sparsity x bits x group size x low-rank ratio for a model and a target.

space.py (the grid, pruned by the target), trial.py (one candidate: compress, measure),
executors.py (local processes or Ray), pareto.py (the front), latency.py (measured or cost
model), run.py (the search), report.py (front.json, chosen.yaml, pareto.html).

Layer 10 (beside ``slmc.bench``, which it does not import): imports ``slmc.driver`` and below.
"""

from slmc.search.run import SearchResult, search
from slmc.search.space import Budget, EvalSettings, SearchSpace

__all__ = ["Budget", "EvalSettings", "SearchResult", "SearchSpace", "search"]
