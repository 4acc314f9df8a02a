"""Reading a PolSESS corpus folder: finding the CSVs, parsing them by column name, checking the files exist.

Kept apart from the builder module on purpose: 🤗 datasets patches ``open``, ``os.path`` and ``pathlib.Path`` in
the module that defines a builder (for streaming), which makes path handling there slow and surprising. Nothing
here is patched.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from .variants import REVERB_STEMS, STEM_COLUMNS, STEM_FOLDERS, STEMS

__all__ = [
    "SPLITS",
    "STRING_COLUMNS",
    "NUMERIC_COLUMNS",
    "stem_path_column",
    "locate_corpus",
    "csv_fingerprint",
    "read_corpus_csv",
    "check_files",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")

STRING_COLUMNS = (
    "subset", "speech1OryginalPath", "speech2OryginalPath", "sceneOryginalPath", "eventOryginalPath",
    "speaker1File", "speaker2File", "eventFile", "sceneFile", "reverbForSpeaker1", "reverbForSpeaker2",
    "reverbForEvent", "mixFile", "sceneClass", "eventClass",
)  # fmt: skip
NUMERIC_COLUMNS = (
    "speech1Start", "speech1End", "speech2Start", "speech2End", "SSR", "sceneStart", "sceneEnd", "sceneRandomDB",
    "sceneOffsetDB", "sceneVolumeGain", "eventStart", "eventEnd", "preDelayForEvent", "preDelay1", "preDelay2",
    "highCut", "diffusion", "decay", "freqDamp",
)  # fmt: skip
# Cell values that mean "empty": MATLAB writes missing strings as "" and NaN doubles as "NaN"; pandas exports
# of the CSV write "nan"; MATLAB's <missing> string can leak through conversions.
_MISSING = frozenset({"", "nan", "NaN", "NAN", "<missing>", "NA", "None"})
# How many missing files an error message lists before summarising.
_SHOW_MISSING = 5


def stem_path_column(stem: str) -> str:
    """Name of the path column of ``stem`` in the prepared dataset, e.g. ``"sp1_reverb_path"``."""
    return f"{stem}_path"


def locate_corpus(data_dir: str | os.PathLike, corpus_name: Optional[str] = None) -> dict[str, Path]:
    """Find ``{split: csv_path}`` for a corpus root, or raise ``FileNotFoundError`` saying which folder to pass.

    Recognised mistakes (``specs/polsess_data.md`` §6.3): the outer folder of a double-nested archive
    (``<name>/<name>/train``), a renamed corpus folder (the CSV names another corpus), a split folder passed
    instead of the root, and a path that does not exist.
    """
    root = Path(data_dir).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"PolSESS data_dir {root} does not exist or is not a directory")
    name = corpus_name or root.name
    found = {s: root / s / f"corpus_{name}_{s}_final.csv" for s in SPLITS}
    found = {s: p for s, p in found.items() if p.is_file()}
    if found:
        return found

    expected = ", ".join(str(root / s / f"corpus_{name}_{s}_final.csv") for s in SPLITS)
    # 1. Outer folder of a nested archive: <root>/<child>/<split>/corpus_<child>_<split>_final.csv.
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if any((child / s / f"corpus_{child.name}_{s}_final.csv").is_file() for s in SPLITS):
            raise FileNotFoundError(
                f"no PolSESS metadata CSV directly under {root}, but {child} holds a complete corpus: this looks "
                f"like the outer folder of a nested archive. Pass data_dir={str(child)!r} (the folder that "
                f"directly contains train/, val/ and test/)."
            )
    # 2. Renamed corpus folder: the split folders hold a CSV named after another corpus.
    for split in SPLITS:
        others = sorted((root / split).glob(f"corpus_*_{split}_final.csv")) if (root / split).is_dir() else []
        if others:
            original = others[0].name[len("corpus_") : -len(f"_{split}_final.csv")]
            raise FileNotFoundError(
                f"{root / split} holds {others[0].name}, i.e. a corpus named {original!r}, but the folder is "
                f"named {root.name!r} and the CSV name is derived from it. Rename the folder back to "
                f"{str(root.with_name(original))!r} and pass that as data_dir, or pass corpus_name={original!r}."
            )
    # 3. A split folder (or a folder inside the corpus) passed instead of the root.
    if root.name in SPLITS and list(root.glob(f"corpus_*_{root.name}_final.csv")):
        raise FileNotFoundError(
            f"{root} is a split folder; pass its parent data_dir={str(root.parent)!r} (the folder that directly "
            f"contains train/, val/ and test/)."
        )
    raise FileNotFoundError(
        f"no PolSESS metadata CSV found under {root}: expected at least one of {expected}. data_dir must be the "
        f"folder that directly contains train/, val/ and test/, and its name must be the corpus name."
    )


def csv_fingerprint(csv_paths: dict[str, Path]) -> str:
    """A short hash of the CSV files' bytes (split names included): part of the builder's cache key."""
    digest = hashlib.blake2b(digest_size=12)
    for split in sorted(csv_paths):
        digest.update(split.encode())
        with open(csv_paths[split], "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _read_csv(csv_path: Path):
    """The CSV as a pandas DataFrame of strings (no type guessing: file names like "nan.wav" stay strings)."""
    import pandas as pd

    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    frame.columns = [c.strip() for c in frame.columns]
    required = [STEM_COLUMNS[s] for s in STEMS]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{csv_path} lacks the column(s) {missing}; a PolSESS CSV names its files in {required} (both the "
            f"31-column generator schema and the 34-column fork schema have them). Found {len(frame.columns)} "
            f"columns: {list(frame.columns)}"
        )
    return frame


def read_corpus_csv(csv_path: Path) -> dict[str, list]:
    """Typed, validated columns ``{csv column: list}`` of a PolSESS metadata CSV, read by column name.

    Strings are stripped and empty/NaN markers become None; numbers are floats (None when empty/NaN). Only the
    known columns of the 31-/34-column schemas are returned (extra columns are ignored). Errors name the CSV,
    the row (0-based, header excluded) and the column.
    """
    import pandas as pd

    frame = _read_csv(csv_path)

    parsed: dict[str, list] = {}
    for column in STRING_COLUMNS:
        if column in frame.columns:
            parsed[column] = [None if v in _MISSING else v for v in frame[column].str.strip().tolist()]
    for column in NUMERIC_COLUMNS:
        if column in frame.columns:
            values = frame[column].str.strip()
            missing = values.isin(_MISSING)
            numbers = pd.to_numeric(values.where(~missing, None), errors="coerce")
            bad = numbers.isna() & ~missing
            if bad.any():
                row = int(bad.to_numpy().nonzero()[0][0])
                raise ValueError(
                    f"{csv_path} row {row} (0-based, header excluded): column {column}={values.iloc[row]!r} is not "
                    f"a number ({int(bad.sum())} such cell(s) in the column)"
                )
            parsed[column] = [None if m else float(v) for v, m in zip(numbers.tolist(), missing.tolist())]
    is_indoor = [v is not None for v in parsed[STEM_COLUMNS["sp1_reverb"]]]
    for stem in STEMS:
        column = STEM_COLUMNS[stem]
        for row, (value, indoor) in enumerate(zip(parsed[column], is_indoor)):
            if value is None and (stem not in REVERB_STEMS or indoor):
                kind = "an indoor row (reverbForSpeaker1 is set)" if stem in REVERB_STEMS else "a row"
                raise ValueError(f"{csv_path} row {row} (0-based, header excluded): column {column} is empty in {kind}")
    return parsed


def check_files(root: str | os.PathLike, tables: dict[str, dict[str, list]]) -> None:
    """Raise ``FileNotFoundError`` listing missing files (count and the first few), across all splits."""
    root, missing, total = Path(root), [], 0
    for split, table in tables.items():
        listings: dict[str, set] = {}
        for stem in STEMS:
            folder = root / split / STEM_FOLDERS[stem]
            if STEM_FOLDERS[stem] not in listings:
                try:
                    listings[STEM_FOLDERS[stem]] = {e.name for e in os.scandir(folder)}
                except FileNotFoundError:
                    listings[STEM_FOLDERS[stem]] = set()
            names = listings[STEM_FOLDERS[stem]]
            column = STEM_COLUMNS[stem]
            rows = table[column]
            if stem in REVERB_STEMS:  # only indoor rows use reverb stems (a stray outdoor cell is ignored)
                rows = [v if indoor is not None else None for v, indoor in zip(rows, table[STEM_COLUMNS["sp1_reverb"]])]
            for row, value in enumerate(rows):
                if value is None:
                    continue
                total += 1
                # A bare file name is looked up in the folder listing; a name with a sub-folder gets a stat.
                present = value in names if "/" not in value else (folder / value).is_file()
                if not present:
                    missing.append(f"{split} row {row} {column}: {folder / value}")
    if missing:
        shown = "\n  ".join(missing[:_SHOW_MISSING])
        more = f"\n  ... and {len(missing) - _SHOW_MISSING} more" if len(missing) > _SHOW_MISSING else ""
        raise FileNotFoundError(
            f"{len(missing)} of the {total} audio files referenced by the PolSESS CSVs under {root} are missing "
            f"(rows are 0-based, header excluded):\n  {shown}{more}\nRe-extract the corpus, or pass "
            f"check_files=False to index it anyway (reading a missing file then fails when the row is loaded)."
        )

