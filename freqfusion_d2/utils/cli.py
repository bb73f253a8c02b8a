"""Input checks and error handling shared by every command-line tool (train_net.py, demo/,
tools/, datasets/ and ``python -m freqfusion_d2.evaluation.panoptic``).

A tool checks its inputs with the ``check_*`` / ``load_*`` / ``read_*`` helpers below before it
builds a model; each raises :class:`InputError`, whose message is one line naming the argument,
the value and what was expected. :func:`run_cli` runs the tool's entry point and turns an
:class:`InputError` into that one line on stderr and exit status 2. With ``--debug`` (added by
:func:`add_debug_flag`) or ``FREQFUSION_DEBUG=1`` in the environment, the traceback is shown.

This module imports neither torch nor detectron2 at import time: the helpers that need them
import them when called, so the dataset and PQ tools stay light.
"""

import argparse
import difflib
import json
import logging
import os
import sys
import traceback
from typing import Any, Callable, Iterable, List, Optional, Sequence

__all__ = [
    "DEBUG_ENV",
    "EXIT_INPUT_ERROR",
    "InputError",
    "add_debug_flag",
    "check_checkpoint",
    "check_datasets",
    "check_dir",
    "check_file",
    "check_output_dir",
    "closest",
    "load_config",
    "load_json",
    "read_image",
    "run_cli",
]

logger = logging.getLogger(__name__)

DEBUG_ENV = "FREQFUSION_DEBUG"
EXIT_INPUT_ERROR = 2  # as argparse's usage errors


class InputError(ValueError):
    """A bad input of a command-line tool, told in one line.

    ``str(error)`` is ``"<argument>: <problem>[; expected <expected>]"``.
    """

    def __init__(self, argument: str, problem: str, expected: Optional[str] = None):
        self.argument = argument
        self.problem = problem
        self.expected = expected
        message = f"{argument}: {problem}"
        if expected:
            message += f"; expected {expected}"
        super().__init__(_one_line(message))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def add_debug_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds ``--debug``: show the traceback of an input error (also ``FREQFUSION_DEBUG=1``)."""
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)",
    )
    return parser


def _debug(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run_cli(main: Callable[[Optional[List[str]]], Optional[int]], argv=None, prog=None) -> int:
    """Runs ``main(argv)`` and returns the process exit status.

    An :class:`InputError` prints ``"<prog>: error: <message>"`` (one line) to stderr and returns
    :data:`EXIT_INPUT_ERROR`; with ``--debug`` in ``argv`` or ``FREQFUSION_DEBUG=1`` the
    traceback is printed first. Other exceptions are bugs, not bad input, and propagate.

    Args:
        main: the tool's entry point; takes the argument list (None: ``sys.argv[1:]``) and
            returns an exit status (None: 0).
        argv: the arguments; default ``sys.argv[1:]``.
        prog: the name printed before the message; default the script name.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    prog = prog or os.path.basename(sys.argv[0])
    try:
        return int(main(args) or 0)
    except InputError as e:
        if _debug(args):
            traceback.print_exc()
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR


def closest(word: str, choices: Iterable[str]) -> Optional[str]:
    """The most similar of ``choices`` to ``word`` (difflib), or None when none is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    match = closest(word, choices)
    return f" (closest valid: {match})" if match else ""


# ---- files --------------------------------------------------------------------------------


def check_file(argument: str, path: str, expected: str) -> str:
    """Returns ``path`` if it is a readable file, else raises :class:`InputError`.

    Args:
        argument: the option or key that named the file, e.g. ``"--config-file"``.
        path: the path given.
        expected: what the file should be, e.g. ``"a YAML config file"``.
    """
    if not path:
        raise InputError(argument, "not given", expected)
    if not os.path.exists(path):
        raise InputError(argument, f"{path} does not exist", expected)
    if os.path.isdir(path):
        raise InputError(argument, f"{path} is a directory", expected)
    if not os.access(path, os.R_OK):
        raise InputError(argument, f"{path} is not readable (permission denied)", expected)
    return path


def check_dir(argument: str, path: str, expected: str, hint: str = "") -> str:
    """Returns ``path`` if it is an existing directory, else raises :class:`InputError`.

    Args:
        argument, path, expected: as in :func:`check_file`.
        hint: how to create it (e.g. the command that prepares a dataset), appended.
    """
    problem = None
    if not path:
        problem = "not given"
    elif not os.path.exists(path):
        problem = f"{path} does not exist"
    elif not os.path.isdir(path):
        problem = f"{path} is not a directory"
    if problem:
        raise InputError(argument, problem + (f" ({hint})" if hint else ""), expected)
    return path


def check_output_dir(argument: str, path: str) -> str:
    """Creates ``path`` if needed; raises :class:`InputError` if it cannot be written."""
    if not path:
        raise InputError(argument, "not given", "an output folder")
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(argument, f"{path} is a file", "an output folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise InputError(argument, f"cannot create {path} ({_first_line(e)})") from e
    if not os.access(path, os.W_OK):
        raise InputError(argument, f"{path} is not writable", "a writable output folder")
    return path


def load_json(argument: str, path: str, required_keys: Sequence[str] = ()) -> Any:
    """Parses the JSON file ``path``; raises :class:`InputError` for a missing or malformed file
    or (for a JSON object) missing ``required_keys``."""
    expected = "a JSON file" + (f" with {', '.join(required_keys)}" if required_keys else "")
    check_file(argument, path, expected)
    try:
        with open(path, "r") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(
            argument, f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(argument, f"{path} cannot be read ({_first_line(e)})", expected) from e
    missing = [k for k in required_keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise InputError(argument, f"{path} has no {', '.join(missing)}", expected)
    return data


def read_image(argument: str, path: str, format: str = "BGR"):
    """The image at ``path`` as detectron2's ``read_image`` returns it (H, W, C uint8).

    Raises:
        InputError: for a missing file or one that is not a complete image (truncated,
            corrupt, or another kind of file), naming the file.
    """
    from detectron2.data.detection_utils import read_image as d2_read_image
    from PIL import UnidentifiedImageError

    expected = "an image file (JPEG, PNG, ...)"
    check_file(argument, path, expected)
    try:
        return d2_read_image(path, format=format)
    except UnidentifiedImageError as e:
        raise InputError(argument, f"{path} is not an image", expected) from e
    except (OSError, ValueError, SyntaxError) as e:
        reason = _first_line(e).split(": ", 1)[-1]
        raise InputError(argument, f"{path} is not a readable image ({reason})", expected) from e


# ---- checkpoints --------------------------------------------------------------------------


def check_checkpoint(argument: str, path: str, required: bool = False) -> None:
    """Verifies the checkpoint ``path`` before a model is built (see
    :func:`freqfusion_d2.engine.checkpoint.verify_checkpoint_file`).

    Empty ``path`` passes unless ``required``; URLs and ``detectron2://`` paths are left to the
    checkpointer, which downloads them.
    """
    if not path:
        if required:
            raise InputError(argument, "not given", "a checkpoint file (.pth or .pkl)")
        return
    if "://" in path:
        return
    from ..engine.checkpoint import verify_checkpoint_file

    check_file(argument, path, "a checkpoint file (.pth or .pkl)")
    verify_checkpoint_file(path, argument=argument, deep=True)


# ---- configs and datasets -----------------------------------------------------------------


# What yacs / detectron2 raise for a config that does not merge.
_MERGE_ERRORS = (KeyError, AssertionError, ValueError, TypeError)


def _config_keys(node, prefix: str = "") -> List[str]:
    """Every dotted key of a CfgNode."""
    keys = []
    for k, v in node.items():
        keys.append(prefix + k)
        if hasattr(v, "is_new_allowed"):
            keys.extend(_config_keys(v, prefix + k + "."))
    return keys


def _unknown_key(cfg, mapping: dict, prefix: str = "") -> Optional[str]:
    """The first dotted key of ``mapping`` (a parsed YAML) that ``cfg`` does not have."""
    for k, v in mapping.items():
        if k in ("_BASE_",):
            continue
        full = prefix + k
        if k not in cfg:
            if cfg.is_new_allowed():
                continue
            return full
        child = cfg[k]
        if isinstance(v, dict) and hasattr(child, "is_new_allowed"):
            found = _unknown_key(child, v, full + ".")
            if found:
                return found
    return None


def _has_key(cfg, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if not hasattr(node, "is_new_allowed"):
            return False
        if part not in node:
            return node.is_new_allowed()
        node = node[part]
    return True


def load_config(
    config_file: str,
    opts: Sequence[str] = (),
    *,
    freeze: bool = True,
    config_argument: str = "--config-file",
    opts_argument: str = "opts",
):
    """The project config (:func:`freqfusion_d2.engine.setup_cfg`) from ``config_file`` and
    ``KEY VALUE`` overrides, with one-line errors.

    Raises:
        InputError: missing or unreadable file, invalid YAML, a missing ``_BASE_``, an unknown
            key (with the closest valid key), an odd number of overrides, or a value of the
            wrong type.
    """
    import yaml

    from ..engine.defaults import setup_cfg

    check_file(config_argument, config_file, "a YAML config file, e.g. one under configs/")
    opts = list(opts)
    if len(opts) % 2:
        raise InputError(
            opts_argument,
            f"{len(opts)} values {opts}: overrides come in KEY VALUE pairs",
            "an even number of values",
        )
    try:
        return setup_cfg(config_file, opts, freeze=freeze)
    except yaml.YAMLError as e:
        raise InputError(
            config_argument, f"{config_file} is not valid YAML ({_first_line(e)})"
        ) from e
    except _MERGE_ERRORS + (OSError,) as e:
        raise _diagnose_config(config_file, opts, e, config_argument, opts_argument) from e


def _diagnose_config(config_file, opts, error, config_argument, opts_argument) -> InputError:
    """The one-line InputError for a config that failed to merge with ``error``."""
    from detectron2.config import CfgNode

    from ..engine.defaults import setup_cfg

    defaults = setup_cfg("", ("MODEL.DEVICE", "cpu"), freeze=False)
    all_keys = _config_keys(defaults)
    try:
        loaded = CfgNode.load_yaml_with_base(config_file, allow_unsafe=True)
    except OSError as e:  # the file itself was readable: one of its _BASE_ files is not
        missing = getattr(e, "filename", None) or _first_line(e)
        return InputError(
            config_argument,
            f"{config_file}: its _BASE_ {missing} cannot be read",
            "_BASE_ paths relative to the file, inside configs/",
        )
    key = _unknown_key(defaults, loaded) if isinstance(loaded, dict) else None
    if key:
        return InputError(
            config_argument,
            f"{config_file} sets the unknown config key {key}{_did_you_mean(key, all_keys)}",
        )
    for key in opts[0::2]:
        if not _has_key(defaults, key):
            return InputError(
                opts_argument, f"unknown config key {key}{_did_you_mean(key, all_keys)}"
            )
    try:
        setup_cfg(config_file, ("MODEL.DEVICE", "cpu"), freeze=False)
    except _MERGE_ERRORS as e:  # the file alone fails to merge
        return InputError(config_argument, f"{config_file}: {_first_line(e)}")
    for key, value in zip(opts[0::2], opts[1::2]):
        try:
            setup_cfg(config_file, ("MODEL.DEVICE", "cpu", key, value), freeze=False)
        except _MERGE_ERRORS as e:
            return InputError(opts_argument, f"{key} {value}: {_first_line(e)}")
    return InputError(opts_argument, _first_line(error))


def check_datasets(argument: str, names: Sequence[str]) -> None:
    """Checks that every dataset in ``names`` is registered and its files are on disk.

    Raises:
        InputError: an unregistered name (with the closest registered one), or a missing file
            or folder, with the command that prepares it.
    """
    from detectron2.data import DatasetCatalog

    from ..data import check_dataset_files

    registered = DatasetCatalog.list()
    for name in names:
        if name not in registered:
            raise InputError(
                argument,
                f"dataset {name!r} is not registered{_did_you_mean(name, registered)}",
            )
        try:
            check_dataset_files(name)
        except FileNotFoundError as e:
            raise InputError(argument, str(e)) from e
