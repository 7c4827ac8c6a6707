"""Where models come from and go to: model references, calibration samples, ONNX in and out.

Layer 7 (beside ``slmc.verify.numerics``, ``slmc.cache.store`` and ``slmc.device``, which it does not import):
imports ``slmc.backend`` and below.
"""
