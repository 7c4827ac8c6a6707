"""Built-in target descriptors (``*.yaml``, installed as ``slmc.targets``), addressed by name: ``-t host``;
``tuning/`` holds the MetaSchedule records shipped per target.

Data only: this package imports nothing; ``slmc.spec.target`` and ``slmc.backend.tuning_db`` read its files
through ``importlib.resources``.
"""
