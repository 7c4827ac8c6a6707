"""``slmc bench``: decode/prefill latency of slmc artifacts next to PyTorch eager and ONNX Runtime.

``machine`` measures the roofline (memory bandwidth, GEMM peak) and the load; ``models`` builds the
benchmarked models (fixture-lm and real-size SLM configs with random weights); ``engines`` wraps
each runtime under the causal-LM cache contract; ``run`` times them interleaved (docs/benchmarks.md).

Layer 10 (beside ``slmc.search``, which it does not import): imports ``slmc.driver`` and below.
"""
