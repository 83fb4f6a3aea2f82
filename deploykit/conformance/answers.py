"""A runtime's answer for one case, read from a file instead of a run (`deploykit conformance judge`).

Beside the inputs in a case's `test_data_set_0/`, the answer is one of:
- `actual_0.pb`: a TensorProto (the ONNX backend-test layout's own format);
- `actual_0.npy`: a NumPy array (a bfloat16 array saved by NumPy reads back as 2-byte voids);
- `actual.json`: trtexec's `--exportOutput` file, `[{"name", "dimensions": "1x3x8x8", "values": [...]}]`;
- `error.txt`: the runtime refused the model with that message.

A binary file may hold the output in a wider float type than the model's (runtimes export a
bfloat16 output as float32), as long as every value is a number of the model's type: the
conversion was then exact, and the values are taken back to that type.

trtexec writes values through a C++ stream at its default precision, 6 significant digits.  That
is enough for float16 (5) and bfloat16 (4), whose values come back exactly once rounded to their
type, but not for float32 (9) or float64 (17): the decimal text is then up to half a unit in its
last digit away from what the runtime computed, and judging it with the bare rounding-error bound
would be a false alarm.  The digits printed are read from the text itself (the most significant
digits of any value), and each value's possible distance is returned with it, for the judge to
add to the bound.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from deploykit.errors import UsageError
from deploykit.vocabulary import NUMPY_DTYPES

#: answer files, in the order a case folder is searched
ANSWER_FILES = ("actual_0.pb", "actual_0.npy", "actual.json", "error.txt")
#: significant decimal digits that bring every value of a type back exactly (max_digits10)
ROUND_TRIP_DIGITS = {"float16": 5, "bfloat16": 4, "float32": 9, "float64": 17}
#: a C++ stream prints NaN and infinities as bare words, which JSON has no spelling for
_NONFINITE_WORD = re.compile(r"(?<=[\[,\s])(-?)(nan|inf(?:inity)?)(?=[\s,\]])", re.IGNORECASE)
#: trtexec's log prefix, `[08/12/2025-10:00:00] `, carries nothing a reason needs
_LOG_TIME = re.compile(r"^\[[0-9/:.\- ]+\] ", re.MULTILINE)


@dataclass
class Answer:
    """What a runtime produced for one case: an output, or a refusal's message."""

    path: Path
    output: np.ndarray | None = None
    refusal: str | None = None
    #: per output element, how far the value given may be from the one the runtime computed
    #: (decimal text rounds it); None when the values are exact
    reading_error: np.ndarray | None = None
    #: how the values were read, when that widens the bound (for the result's text)
    reading: str = ""


def answer_files(data: Path) -> list[Path]:
    """The answer files present in a case's `test_data_set_0/`."""
    return [data / name for name in ANSWER_FILES if (data / name).is_file()]


def read_answer(path: Path, dtype: str, output_name: str) -> Answer:
    """The answer in `path` for a model whose output `output_name` has type `dtype`; a file that
    cannot be read as its format says is a UsageError naming it."""
    readers = {"actual_0.pb": _read_tensor_proto, "actual_0.npy": _read_npy, "actual.json": _read_trtexec_json,
               "error.txt": _read_refusal}
    return readers[path.name](path, dtype, output_name)


def _read_refusal(path: Path, dtype: str, output_name: str) -> Answer:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        raise UsageError(f"{path}: cannot read it ({error.strerror})") from None
    message = " ".join(_LOG_TIME.sub("", text).split())
    if not message:
        raise UsageError(f"{path} is empty; it must hold the runtime's error message")
    return Answer(path, refusal=message)


def _read_tensor_proto(path: Path, dtype: str, output_name: str) -> Answer:
    try:
        array = numpy_helper.to_array(onnx.load_tensor(str(path)))
    except Exception as error:  # noqa: BLE001 - protobuf and onnx raise many types for a bad file
        raise UsageError(f"{path}: not a TensorProto ({type(error).__name__}: {error})") from None
    return Answer(path, output=_as_model_type(array, dtype, path))


def _npy_size_problem(path: Path) -> str | None:
    """Why a .npy file cannot hold the array its header declares (None: it can), read before the
    array: a header promising 10^16 values would otherwise be an allocation, and "out of memory"."""
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version not in ((1, 0), (2, 0)):
                return None  # a newer layout: np.load below reads it, or says why not
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, descr = read_header(handle)
            data = path.stat().st_size - handle.tell()
    except (OSError, ValueError, EOFError, SyntaxError, TypeError) as error:
        return f"not a NumPy .npy array ({error})"
    if descr.hasobject:
        return None  # np.load refuses it below, pickles not being allowed
    expected = math.prod(shape) * descr.itemsize
    if expected != data:
        return f"its header declares shape {'x'.join(map(str, shape)) or 'scalar'} ({expected:,} bytes) but it holds {data:,}"
    return None


def _read_npy(path: Path, dtype: str, output_name: str) -> Answer:
    problem = _npy_size_problem(path)
    if problem:
        raise UsageError(f"{path}: {problem}")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise UsageError(f"{path}: not a NumPy .npy array ({error})") from None
    if not isinstance(array, np.ndarray):
        raise UsageError(f"{path}: not a NumPy .npy array")
    if array.dtype.kind == "V" and array.dtype.itemsize == 2 and dtype == "bfloat16":
        array = array.view(NUMPY_DTYPES["bfloat16"])  # how NumPy saves ml_dtypes' bfloat16
    return Answer(path, output=_as_model_type(array, dtype, path))


def _as_model_type(array: np.ndarray, dtype: str, path: Path) -> np.ndarray:
    """The values in the model's output type: the same type, or a wider float type whose values
    are all numbers of the model's type (what a runtime exporting bfloat16 as float32 writes)."""
    wanted = NUMPY_DTYPES[dtype]
    if array.dtype == wanted:
        return array
    if array.dtype.kind != "f" or array.dtype.itemsize <= wanted.itemsize:
        raise UsageError(f"{path} holds {array.dtype.name} values; the model's output is {dtype}")
    narrowed = array.astype(wanted)
    back = narrowed.astype(array.dtype)
    same = (back == array) | (np.isnan(back) & np.isnan(array))
    if not same.all():
        raise UsageError(f"{path} holds {array.dtype.name} values that are not {dtype} numbers (e.g. {array[~same].flat[0]!r});"
                         f" the model's output is {dtype}")
    return narrowed


def _read_trtexec_json(path: Path, dtype: str, output_name: str) -> Answer:
    entry = _trtexec_entry(path, output_name)
    shape = _dimensions(entry.get("dimensions"), path)
    numbers = entry.get("values")
    if not isinstance(numbers, list) or not all(isinstance(v, Decimal) for v in numbers):
        raise UsageError(f"{path}: entry {output_name!r} has no list of numbers under \"values\"")
    if len(numbers) != math.prod(shape):
        raise UsageError(f"{path}: entry {output_name!r} has {len(numbers)} values for dimensions"
                         f" {'x'.join(map(str, shape))} ({math.prod(shape)} expected)")
    values = np.array([float(v) for v in numbers], dtype=np.float64).reshape(shape)
    digits = max((_significant_digits(v) for v in numbers if v.is_finite()), default=ROUND_TRIP_DIGITS[dtype])
    if digits >= ROUND_TRIP_DIGITS[dtype]:
        return Answer(path, output=values.astype(NUMPY_DTYPES[dtype]))
    error = np.array([_half_unit(v, digits) for v in numbers], dtype=np.float64).reshape(shape)
    reading = (f"values read from {digits}-digit decimal text ({dtype} needs {ROUND_TRIP_DIGITS[dtype]}): the bound"
               " allows half a unit in their last digit more")
    return Answer(path, output=values, reading_error=error, reading=reading)


def _trtexec_entry(path: Path, output_name: str) -> dict:
    """The entry for the model's output in trtexec's --exportOutput file, numbers kept as Decimals."""
    try:
        text = path.read_text()
        parsed = json.loads(_NONFINITE_WORD.sub(_json_nonfinite, text), parse_float=Decimal, parse_int=Decimal,
                            parse_constant=Decimal)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise UsageError(f"{path}: not trtexec's --exportOutput JSON ({error or type(error).__name__})") from None
    if not isinstance(parsed, list) or not all(isinstance(e, dict) for e in parsed):
        raise UsageError(f"{path}: not trtexec's --exportOutput JSON (a list of {{name, dimensions, values}})")
    found = [e for e in parsed if e.get("name") == output_name]
    if not found:
        names = ", ".join(repr(e.get("name")) for e in parsed) or "none"
        raise UsageError(f"{path} has no entry for the model's output {output_name!r} (entries: {names})")
    return found[0]


def _json_nonfinite(word: re.Match) -> str:
    """`nan`, `-nan`, `inf`, `-inf` as C++ prints them -> JSON's NaN / Infinity spellings for Python."""
    if word.group(2).lower().startswith("nan"):
        return "NaN"
    return f"{word.group(1)}Infinity"


def _dimensions(text, path: Path) -> tuple[int, ...]:
    """trtexec's dimensions, an "x"-joined string such as "1x3x8x8"."""
    if not isinstance(text, str) or not re.fullmatch(r"\d+(x\d+)*", text):
        raise UsageError(f"{path}: \"dimensions\" must be a string such as \"1x3x8x8\", got {text!r}")
    return tuple(int(part) for part in text.split("x"))


def _significant_digits(value: Decimal) -> int:
    """Significant digits as printed, trailing zeros left out (a stream's %g drops them, so a value
    such as 0.5 says nothing about the precision; the most digits of any value in a file does)."""
    digits = value.as_tuple().digits
    text = "".join(map(str, digits)).strip("0")
    return max(len(text), 1)


def _half_unit(value: Decimal, digits: int) -> float:
    """How far a value printed with `digits` significant digits may be from the one printed, plus
    what reading the decimal into a float64 may add (a few float64 ulps, kept to stay rigorous)."""
    if not value.is_finite() or value.is_zero():
        return 0.0  # a stream prints 0 only for a zero, and a non-finite value is judged as such
    half = Decimal(5).scaleb(value.adjusted() - digits)
    return float(half) * (1 + 2.0**-50) + abs(float(value)) * 2.0**-52
