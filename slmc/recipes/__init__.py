"""Built-in recipes (``*.yaml``), addressed by name: ``slmc compile -r default``.

Data only: this package imports nothing; ``slmc.spec.recipe`` reads its files through ``importlib.resources``.
"""
