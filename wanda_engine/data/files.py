"""Local files in the official layouts (``--data_dir DIR``; see DESIGN.md §5)."""

from __future__ import annotations

import gzip
import json
import os
import re

from wanda_engine.errors import UserError

JSON_EXTS = (".jsonl", ".json", ".jsonl.gz", ".json.gz")


def subdir(data_dir: str | None, name: str) -> str | None:
    """DIR/name when --data_dir is given (whether or not it exists)."""
    return os.path.join(os.path.expanduser(data_dir), name) if data_dir else None


def check_data_dir(data_dir: str | None) -> None:
    if data_dir and not os.path.isdir(os.path.expanduser(data_dir)):
        raise UserError(f"--data_dir {data_dir!r} is not a directory; pass a folder laid out as DIR/wikitext2, DIR/squad, DIR/c4, ...")


def first_file(folder: str | None, names: tuple[str, ...]) -> str | None:
    if not folder:
        return None
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def list_files(folder: str | None, exts: tuple[str, ...]) -> list[str]:
    """Sorted files of ``folder`` whose (lower-case) name ends with one of ``exts``."""
    if not folder or not os.path.isdir(folder):
        return []
    return sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.lower().endswith(exts) and os.path.isfile(os.path.join(folder, f))
    )


_SPLIT_ORDER = ("train", "valid", "dev", "val", "test")


def names_split(path: str, split: str) -> bool:
    """Whether a file name names ``split`` as a word start ("c4-train.json", "wiki.valid.raw"; not "constraints")."""
    return re.search(rf"(?<![a-z]){re.escape(split)}", os.path.basename(path).lower()) is not None


def pick_split_file(files: list[str], want: str = "train") -> tuple[str | None, str]:
    """The file of split ``want`` if present, else the first other split file (train, valid/dev, test order).

    Returns (path or None, note): the note is "" for the wanted split and says which split stood in otherwise.
    """
    if not files:
        return None, ""

    def rank(path: str) -> tuple[int, str]:
        base = os.path.basename(path).lower()
        order = (want,) + tuple(s for s in _SPLIT_ORDER if s != want)
        for r, s in enumerate(order):
            if names_split(path, s):
                return r, base
        return len(order), base

    best = min(files, key=rank)
    if names_split(best, want):
        return best, ""
    return best, f"no {want} split file present, using {os.path.basename(best)} instead"


def read_text(path: str, what: str) -> str:
    """Whole file as text (UTF-8, universal newlines: CRLF files read the same as LF ones)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise UserError(f"{what} {path!r} is not UTF-8 text; pass a UTF-8 text file") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path!r} ({exc.strerror or exc}); check the path") from None


def read_hf_rows(path: str, what: str) -> list[str]:
    """Rows the way Hugging Face builds WikiText from the official file.

    One row per line, each keeping its trailing "\\n"; a line holding only whitespace becomes "".
    """
    parts = read_text(path, what).split("\n")  # like iterating the file: only "\n" ends a line
    lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    return [line if line.strip() else "" for line in lines]


def _open_text(path: str):
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_json_lines(path: str, what: str) -> list[dict]:
    """One JSON object per line (blank lines ignored); .gz files are decompressed."""
    records = []
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(
                        f"{what} {path!r} line {lineno} is not a JSON object ({exc.msg}); expected one JSON object per line"
                    ) from None
                if not isinstance(obj, dict):
                    raise UserError(f"{what} {path!r} line {lineno} is not a JSON object; expected one JSON object per line")
                records.append(obj)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise UserError(f"cannot read {what} {path!r} ({exc}); check the file") from None
    return records


def read_json(path: str, what: str):
    try:
        with _open_text(path) as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} {path!r} is not valid JSON ({exc.msg} at line {exc.lineno}); check the file") from None
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise UserError(f"cannot read {what} {path!r} ({exc}); check the file") from None
