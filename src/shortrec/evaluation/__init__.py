"""Offline evaluation: metrics (pure numpy), protocols, baselines, the runner and its report.

Imports only the bottom layer (``shortrec.config``, ``shortrec.domain``, ``shortrec.schema``).
Entry points: :func:`shortrec.evaluation.runner.evaluate`,
:func:`shortrec.evaluation.report.write_report`,
:func:`shortrec.evaluation.baselines.default_baselines`.
"""
