"""Pure projections (folds) of the normalized event stream.

Modules: :mod:`~projections.events` (the frozen event), :mod:`~projections.account`,
:mod:`~projections.user`, :mod:`~projections.catalog` (views, each with ``NAME``, ``VERSION``,
``fold``, ``fold_all``, ``merge``) and :mod:`~projections.health` (the score). Nothing here
does I/O or reads a clock: ``tests/unit/test_purity.py`` enforces it.
"""

__all__ = ["account", "catalog", "events", "health", "registers", "user"]
