"""Reuse: turn the learnwares that search returns into predictions on the user's task.

Every reuser is a scikit-learn estimator (``fit``/``predict``/``predict_proba``,
``get_params``), so it drops into Pipelines and model selection.
"""

from learndock.reuse.auto import AutoReuser
from learndock.reuse.base import spec_featurizer
from learndock.reuse.datadep import (
    EnsemblePruningReuser,
    FeatureAugmentReuser,
    FinetuneReuser,
    own_model,
)
from learndock.reuse.datafree import AveragingReuser, JobSelectorReuser
from learndock.reuse.decision import Decision, DecisionStep, LearnwareReason, decide

__all__ = [
    "AutoReuser",
    "AveragingReuser",
    "Decision",
    "DecisionStep",
    "EnsemblePruningReuser",
    "FeatureAugmentReuser",
    "FinetuneReuser",
    "JobSelectorReuser",
    "LearnwareReason",
    "decide",
    "own_model",
    "spec_featurizer",
]
