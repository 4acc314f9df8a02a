"""PolSESS as a 🤗 ``datasets`` builder: one example per CSV row, in CSV order, with every stem's path.

Usage (datasets 5.x has no loading scripts; the builder is a class of this package, instantiated directly)::

    from polsess_hf.data import PolSESS

    builder = PolSESS(data_dir="~/datasets/PolSESS_C_final_128_v2", cache_dir="~/.cache/polsess")
    builder.download_and_prepare()          # reads the CSVs, checks every referenced file exists, writes Arrow
    train_rows = builder.as_dataset("train")

Corpus layout (``specs/polsess_data.md`` §1): ``data_dir`` is the folder that directly contains ``train/``,
``val/`` and ``test/``; the corpus name is its basename, and each split's metadata is
``<data_dir>/<split>/corpus_<name>_<split>_final.csv``. Audio lives in ``<data_dir>/<split>/<folder>/<file>``
with the folder and CSV column of each stem listed in :data:`.variants.STEM_FOLDERS` /
:data:`.variants.STEM_COLUMNS`. Splits without a CSV are skipped (a corpus may ship train/val only).

Each example holds:

* ``id`` (the ``mixFile`` value), ``row_index`` (0-based CSV position), ``is_indoor``
  (``reverbForSpeaker1`` is not empty: the only family flag the corpus has);
* ``<stem>_path`` for the 8 stems (absolute path strings; ``None`` for the reverb stems of outdoor rows);
* every known metadata column under its CSV name: ``SSR``, ``sceneClass``, ``eventClass``, the reverb
  parameters (``None`` for outdoor rows), the source paths and segment bounds, and the fork's
  ``sceneRandomDB``/``sceneOffsetDB``/``sceneVolumeGain`` (``None`` for a 31-column generator CSV).

Columns are read by name, so both the generator's 31-column CSV and the thesis fork's 34-column CSV work; extra
columns are ignored. Duplicated rows are kept (the pilot corpus C_both repeats half its rows). Paths are stored,
not audio: an ``Audio`` feature would need torchcodec, which does not work here (``specs/environment.md``).

Reading the folder (CSV lookup, parsing, file checks) lives in :mod:`.corpus`. The cache is keyed by the
resolved ``data_dir``, the corpus name and a hash of the CSV files, so a regenerated
corpus in the same folder is re-indexed instead of served stale.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Optional

import datasets

from .corpus import (
    NUMERIC_COLUMNS,
    SPLITS,
    STRING_COLUMNS,
    check_files,
    csv_fingerprint,
    locate_corpus,
    read_corpus_csv,
    stem_path_column,
)
from .variants import REVERB_STEMS, STEM_COLUMNS, STEM_FOLDERS, STEMS

__all__ = ["PolSESS", "PolSESSConfig"]


@dataclass
class PolSESSConfig(datasets.BuilderConfig):
    """Builder configuration.

    Attributes:
        corpus_name (`str`, *optional*): the ``<name>`` in ``corpus_<name>_<split>_final.csv``; defaults to the
            basename of ``data_dir`` (the thesis rule). Set it when the corpus folder was renamed.
        check_files (`bool`, defaults to `True`): at prepare time, verify that every file the CSVs reference
            exists and raise ``FileNotFoundError`` listing the missing ones. Costs one directory listing per
            folder, not one ``stat`` per file.
        csv_fingerprint (`str`, *optional*): set by :class:`PolSESS` from the CSV contents; part of the cache key.
    """

    corpus_name: Optional[str] = None
    check_files: bool = True
    csv_fingerprint: Optional[str] = None


class PolSESS(datasets.GeneratorBasedBuilder):
    """Index of a PolSESS corpus (rows, stem paths, metadata) as an Arrow dataset; see the module docstring.

    Args:
        data_dir: corpus root, the folder that directly contains ``train/``, ``val/``, ``test/``.
        cache_dir: where the Arrow files go (default: the 🤗 datasets cache).
        corpus_name: override of the corpus name (default: basename of ``data_dir``).
        check_files: verify at prepare time that every referenced file exists (default True).

    Raises:
        FileNotFoundError: at construction when no CSV is found (the message says which folder to pass), and at
            :meth:`download_and_prepare` when referenced audio files are missing (count and first paths).
        ValueError: at :meth:`download_and_prepare` for a CSV without the file columns, an empty file cell or a
            non-numeric metadata cell (CSV, row and column named).
    """

    BUILDER_CONFIG_CLASS = PolSESSConfig
    # Bump when the example schema changes, so old caches are not reused.
    VERSION = datasets.Version("1.0.0")
    DEFAULT_WRITER_BATCH_SIZE = 10_000

    def __init__(
        self,
        *args,
        data_dir: Optional[str | os.PathLike] = None,
        cache_dir: Optional[str | os.PathLike] = None,
        corpus_name: Optional[str] = None,
        check_files: bool = True,
        **kwargs,
    ):
        if data_dir is None:
            raise ValueError(
                "PolSESS needs data_dir=<corpus root> (the folder that directly contains train/, val/, test/)"
            )
        root = os.path.realpath(os.path.expanduser(os.fspath(data_dir)))
        self._csv_paths = locate_corpus(root, corpus_name)
        super().__init__(
            *args,
            data_dir=root,
            cache_dir=None if cache_dir is None else os.path.expanduser(os.fspath(cache_dir)),
            corpus_name=corpus_name or os.path.basename(root),
            check_files=bool(check_files),
            csv_fingerprint=csv_fingerprint(self._csv_paths),
            version=self.VERSION,
            **kwargs,
        )

    @property
    def available_splits(self) -> tuple[str, ...]:
        """The splits whose CSV exists, in train/val/test order."""
        return tuple(s for s in SPLITS if s in self._csv_paths)

    def _info(self) -> datasets.DatasetInfo:
        features = {
            "id": datasets.Value("string"),
            "row_index": datasets.Value("int64"),
            "is_indoor": datasets.Value("bool"),
        }
        features.update({stem_path_column(s): datasets.Value("string") for s in STEMS})
        features.update({c: datasets.Value("string") for c in STRING_COLUMNS})
        features.update({c: datasets.Value("float64") for c in NUMERIC_COLUMNS})
        return datasets.DatasetInfo(
            description="PolSESS (Polish speech in realistic scenes) index: one row per mixture, stem paths, metadata.",
            features=datasets.Features(features),
        )

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        # Parse and check everything before writing anything, so a broken corpus fails with a direct error
        # (inside _generate_examples, datasets would wrap it in a generic DatasetGenerationError).
        tables = {split: read_corpus_csv(path) for split, path in self._csv_paths.items()}
        if self.config.check_files:
            check_files(self.config.data_dir, tables)
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"split": split, "table": tables[split]})
            for split in self.available_splits
        ]

    def _generate_examples(self, split: str, table: dict[str, list]) -> Iterator[tuple[int, dict]]:
        # Plain string joins: datasets patches os.path/pathlib in this module, and its versions cost ~50 µs each.
        folders = {stem: f"{self.config.data_dir}/{split}/{STEM_FOLDERS[stem]}/" for stem in STEMS}
        n_rows = len(table[STEM_COLUMNS["mix"]])
        absent = [c for c in STRING_COLUMNS + NUMERIC_COLUMNS if c not in table]
        for row in range(n_rows):
            is_indoor = table[STEM_COLUMNS["sp1_reverb"]][row] is not None
            example = {"id": table[STEM_COLUMNS["mix"]][row], "row_index": row, "is_indoor": is_indoor}
            for stem in STEMS:
                name = table[STEM_COLUMNS[stem]][row]
                # Outdoor rows never use reverb stems, even if a stray cell is filled: reverbForSpeaker1 decides.
                keep = name is not None and (stem not in REVERB_STEMS or is_indoor)
                example[stem_path_column(stem)] = folders[stem] + name if keep else None
            for column, values in table.items():
                example[column] = values[row]
            for column in absent:  # e.g. the fork's scene columns in a 31-column generator CSV
                example[column] = None
            yield row, example
