"""The datasets builder: rows in CSV order, both CSV schemas, paths, metadata, root errors, file checks, cache key."""

import csv
import os
import shutil

import pytest

from polsess_hf.data import PolSESS
from polsess_hf.data.corpus import locate_corpus
from polsess_hf.data.mini import FORK_COLUMNS, GENERATOR_COLUMNS
from polsess_hf.data.variants import STEM_COLUMNS, STEM_FOLDERS, STEMS


def _csv_rows(root, split):
    with open(root / split / f"corpus_{root.name}_{split}_final.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _prepare(root, cache_dir, split="train", **kwargs):
    builder = PolSESS(data_dir=root, cache_dir=cache_dir, **kwargs)
    builder.download_and_prepare()
    return builder, builder.as_dataset(split)


def test_one_example_per_row_in_csv_order_with_paths_and_metadata(mini_root, cache_dir):
    builder, dataset = _prepare(mini_root, cache_dir)
    assert builder.available_splits == ("train", "val", "test")
    rows = _csv_rows(mini_root, "train")
    assert len(dataset) == len(rows) == 24
    assert dataset["id"] == [row["mixFile"] for row in rows]
    assert dataset["row_index"] == list(range(24))
    for example, row in zip(dataset, rows):
        indoor = row["reverbForSpeaker1"] != ""
        assert example["is_indoor"] == indoor
        for stem in STEMS:
            path = example[f"{stem}_path"]
            if stem.endswith("reverb") and not indoor:
                assert path is None
            else:
                assert path == str(mini_root.resolve() / "train" / STEM_FOLDERS[stem] / row[STEM_COLUMNS[stem]])
                assert os.path.isfile(path)
        assert example["SSR"] == float(row["SSR"])
        assert example["sceneClass"] == row["sceneClass"] and example["eventClass"] == row["eventClass"]
        assert example["sceneOffsetDB"] == pytest.approx(float(row["sceneOffsetDB"]))
        for parameter in ("preDelay1", "preDelay2", "preDelayForEvent", "highCut", "diffusion", "decay", "freqDamp"):
            assert (example[parameter] is None) == (not indoor)
            if indoor:
                assert example[parameter] == pytest.approx(float(row[parameter]))
    assert {True, False} == set(dataset["is_indoor"])


def test_generator_schema_31_columns_is_read_by_name(generator_root, cache_dir):
    with open(generator_root / "train" / f"corpus_{generator_root.name}_train_final.csv") as handle:
        assert next(csv.reader(handle)) == list(GENERATOR_COLUMNS)
    assert len(GENERATOR_COLUMNS) == 31 and len(FORK_COLUMNS) == 34
    builder, dataset = _prepare(generator_root, cache_dir)
    assert builder.available_splits == ("train", "val")  # the fixture has no test split
    assert len(dataset) == 6
    assert all(value is None for value in dataset["sceneRandomDB"])  # fork-only column
    assert dataset["sceneClass"] == [row["sceneClass"] for row in _csv_rows(generator_root, "train")]


def test_reordered_and_extra_columns_and_duplicated_rows(corpus_copy, cache_dir):
    root = corpus_copy("shuffled_columns")
    path = root / "train" / f"corpus_{root.name}_train_final.csv"
    rows = _csv_rows(root, "train")
    columns = list(reversed(list(rows[0]))) + ["someNewColumn"]
    doubled = rows[:5] + rows[:5] + rows[5:]  # C_both-style duplicates are kept, in place
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in doubled:
            writer.writerow({**row, "someNewColumn": "x"})
    _, dataset = _prepare(root, cache_dir)
    assert dataset["id"] == [row["mixFile"] for row in doubled]
    assert "someNewColumn" not in dataset.column_names


def test_regenerated_corpus_in_the_same_folder_is_reindexed(corpus_copy, cache_dir):
    root = corpus_copy("regenerated")
    _, first = _prepare(root, cache_dir)
    path = root / "train" / f"corpus_{root.name}_train_final.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:4]) + "\n")  # now 3 rows
    _, second = _prepare(root, cache_dir)
    assert len(first) == 24 and len(second) == 3


def test_nested_archive_error_names_the_inner_folder(corpus_copy, tmp_path):
    inner = corpus_copy("PolSESS_C_both")  # extracted double-nested: <archive>/PolSESS_C_both/PolSESS_C_both/train
    outer = tmp_path / "archive" / "PolSESS_C_both"
    outer.mkdir(parents=True)
    shutil.move(str(inner), str(outer / "PolSESS_C_both"))
    with pytest.raises(FileNotFoundError, match="nested archive") as error:
        PolSESS(data_dir=outer)
    assert f"data_dir={str(outer / 'PolSESS_C_both')!r}" in str(error.value)


def test_renamed_folder_error_and_corpus_name_override(corpus_copy, tmp_path, cache_dir):
    root = corpus_copy("PolSESS_C_final_128_v2")
    renamed = root.rename(tmp_path / "my_copy")
    with pytest.raises(FileNotFoundError, match="corpus named 'PolSESS_C_final_128_v2'") as error:
        locate_corpus(renamed)
    assert "corpus_name='PolSESS_C_final_128_v2'" in str(error.value)
    _, dataset = _prepare(renamed, cache_dir, corpus_name="PolSESS_C_final_128_v2")
    assert len(dataset) == 24


def test_split_folder_and_missing_root_errors(mini_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="is a split folder; pass its parent"):
        locate_corpus(mini_root / "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        locate_corpus(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no PolSESS metadata CSV found"):
        locate_corpus(tmp_path / "empty")


def test_missing_files_are_reported_at_prepare_time(corpus_copy, cache_dir):
    root = corpus_copy("with_holes")
    rows = _csv_rows(root, "val")
    indoor = next(row for row in rows if row["reverbForSpeaker1"])
    removed = [
        root / "val" / "clean" / rows[0]["speaker2File"],
        root / "val" / "ev_reverb" / indoor["reverbForEvent"],
        *[root / "train" / "scene" / row["sceneFile"] for row in _csv_rows(root, "train")[:6]],
    ]
    for path in removed:
        path.unlink()
    with pytest.raises(FileNotFoundError) as error:
        PolSESS(data_dir=root, cache_dir=cache_dir).download_and_prepare()
    message = str(error.value)
    assert message.startswith("8 of the ")
    assert str(removed[2]) in message and "... and 3 more" in message
    assert "check_files=False" in message
    # Opting out indexes the corpus anyway.
    builder = PolSESS(data_dir=root, cache_dir=cache_dir, check_files=False)
    builder.download_and_prepare()
    assert len(builder.as_dataset("val")) == 8


def test_broken_csv_cells_name_row_and_column(corpus_copy, cache_dir):
    root = corpus_copy("broken_cells")
    path = root / "val" / f"corpus_{root.name}_val_final.csv"
    rows = _csv_rows(root, "val")
    rows[2]["SSR"] = "loud"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValueError, match=r"row 2 .*column SSR='loud' is not a number"):
        PolSESS(data_dir=root, cache_dir=cache_dir).download_and_prepare()
    rows[2]["SSR"] = "3"
    indoor = next(i for i, row in enumerate(rows) if row["reverbForSpeaker1"])
    rows[indoor]["reverbForEvent"] = ""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValueError, match=rf"row {indoor} .*column reverbForEvent is empty in an indoor row"):
        PolSESS(data_dir=root, cache_dir=cache_dir).download_and_prepare()


def test_csv_without_file_columns_is_rejected(corpus_copy, cache_dir):
    root = corpus_copy("no_files")
    path = root / "test" / f"corpus_{root.name}_test_final.csv"
    path.write_text("subset,SSR\ntest,1\n")
    with pytest.raises(ValueError, match="lacks the column\\(s\\) \\['mixFile'"):
        PolSESS(data_dir=root, cache_dir=cache_dir).download_and_prepare()
