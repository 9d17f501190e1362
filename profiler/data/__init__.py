"""SFT data: loading files, detecting formats, stable example ids and rendering to tokens."""

from profiler.data.formats import FORMATS, Example, detect_format, normalize_record
from profiler.data.io import RawRow, read_rows
from profiler.data.load import LoadedRow, load_examples
from profiler.data.render import RenderedExample, Renderer

__all__ = [
    "FORMATS",
    "Example",
    "LoadedRow",
    "RawRow",
    "RenderedExample",
    "Renderer",
    "detect_format",
    "load_examples",
    "normalize_record",
    "read_rows",
]
