"""Monitoring: drift statistics shared by offline checks and the online service."""

from shortrec.monitoring.drift import (
    DRIFT_FEATURES,
    DriftError,
    DriftMonitor,
    DriftStat,
    FeatureReference,
    Reference,
    drift_report,
    ks_statistic,
    load_reference,
    psi,
    save_reference,
)

__all__ = [
    "DRIFT_FEATURES",
    "DriftError",
    "DriftMonitor",
    "DriftStat",
    "FeatureReference",
    "Reference",
    "drift_report",
    "ks_statistic",
    "load_reference",
    "psi",
    "save_reference",
]
