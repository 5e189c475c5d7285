"""The reference model, written from the spec (docs/architecture.md): the float model
(model.py), its folding to integers (fold.py), the integer model and its file format
(qmodel.py), the hardware-exact reference path and schedule (hwpath.py), the variability
model (variability.py) and the per-event energy model (energy.py).

The RTL never reads this package and this package never reads the RTL; the cosim proves
them equal. Training, data, pruning and sweeps live in ``sbnn.studies``.
"""
