"""The studies built on the reference model: training and its recipes, MNIST data and
augmentation, pruning, sweeps, evaluation tables and plots.

Nothing here is part of what the hardware computes; that is ``sbnn.golden`` (model, folding,
integer model, hardware-exact reference path, variability model), which never imports
this package.
"""
