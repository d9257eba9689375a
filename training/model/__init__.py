"""The network and what it needs: RAT (:mod:`~rat.training.model.network`, NAFBlocks, region and window
attention, attention plans, the FlexAttention backend, memory policies) and models as plug-ins
(:mod:`~rat.training.model.registry`; RAT registered by :mod:`~rat.training.model.rat_models`, the baselines
by :mod:`rat.training.model.adapters`).

Modules import each other directly; this ``__init__`` gathers no names.
"""
