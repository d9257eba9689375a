"""Allowed values and shared defaults of the training side, defined once.

Torch-free on purpose: the command line's help imports this module, and it must stay instant.
"""

#: Attention of the latent layers: region (the paper's R-MSA), and the Table 4 ablations.
ATTENTIONS = ("rmsa", "wmsa", "msa")
#: How region attention is computed (all exact): see :mod:`rat.training.model.attention`.
BACKENDS = ("auto", "dense", "sparse", "flex")
#: Model builders of :mod:`rat.training.model.network`.
MODEL_NAMES = ("rat", "rat-small")
#: Training loss: focal region loss or plain L1.
LOSSES = ("fr", "l1")
#: What a training step stores for backward and recomputes (:mod:`rat.training.model.memory`);
#: the first is the default.
MEMORY_POLICIES = ("selective", "full", "none")
#: Focal region loss weights divided by the largest region weight of each image (the paper's
#: formula) or of the whole batch (the authors' public code); the first is the default.
FR_NORMS = ("image", "batch")
#: Splits that may choose best.pt: the validation split (default), or the test split as the authors did.
VAL_SPLITS = ("val", "test")
PRECISIONS = ("auto", "bf16", "fp32")
#: Compile the network's blocks (:mod:`rat.training.model.compiling`): auto = on CUDA only.
COMPILE = ("auto", "on", "off")
METRICS_FORMATS = ("jsonl", "csv")

#: Whole-image inference: tile edge and overlap of neighbouring tiles (pixels).
TILE = 512
OVERLAP = 32
