"""lvdata: predator-prey trajectories (load, validate, simulate, split) and the LLMTime codec.

No torch, transformers or mlflow imports here: tokenizers are duck-typed.
"""

from lvdata.codec import LLMTimeCodec, count_invalid_steps
from lvdata.errors import DataError
from lvdata.simulate import LVParams, RMParams, integrate, simulate
from lvdata.split import Split, split
from lvdata.trajectories import Trajectories, load_trajectories, validate
from lvdata.windows import IGNORE_INDEX, Windows, make_windows, tokenize_steps

__all__ = [
    "IGNORE_INDEX",
    "DataError",
    "LLMTimeCodec",
    "LVParams",
    "RMParams",
    "Split",
    "Trajectories",
    "Windows",
    "count_invalid_steps",
    "integrate",
    "load_trajectories",
    "make_windows",
    "simulate",
    "split",
    "tokenize_steps",
    "validate",
]

__version__ = "0.1.0"
