"""Supported-BinaryNet SRAM compute-in-memory generator.

Subpackages live in the repository's top-level folders:
``sbnn.golden`` (golden/), ``sbnn.rtl`` (rtl/), ``sbnn.gen`` (gen/), ``sbnn.cosim`` (cosim/).
"""

__version__ = "0.1.0"
