"""SeparationCollator: stacking fixed-length items, random training crops, padding with lengths for evaluation."""

import numpy as np
import pytest
import torch

from polsess_hf.data import SeparationCollator, collate_separation


def _item(length, n_src=2, offset=0.0, name="x"):
    time_axis = torch.arange(length, dtype=torch.float32) + offset
    return {
        "input_values": time_axis.clone(),
        "labels": torch.stack([time_axis * (k + 1) for k in range(n_src)]),
        "variant": "C",
        "is_indoor": True,
        "id": name,
    }


def test_stack_gives_model_tensors_only():
    batch = collate_separation([_item(100, offset=0), _item(100, offset=1000)])
    assert set(batch) == {"input_values", "labels"}
    assert batch["input_values"].shape == (2, 100) and batch["labels"].shape == (2, 2, 100)
    assert batch["input_values"].dtype == batch["labels"].dtype == torch.float32
    assert batch["input_values"][1, 0] == 1000 and batch["labels"][1, 1, 3] == 2 * 1003


def test_stack_accepts_numpy_items_and_metadata():
    items = [{**_item(10, n_src=1, name=f"id{k}")} for k in range(3)]
    items[0]["input_values"] = items[0]["input_values"].numpy().astype(np.float64)
    batch = SeparationCollator(return_metadata=True)(items)
    assert batch["labels"].shape == (3, 1, 10) and batch["input_values"].dtype == torch.float32
    assert batch["id"] == ["id0", "id1", "id2"] and batch["variant"] == ["C"] * 3
    assert batch["is_indoor"].tolist() == [True, True, True]


def test_stack_rejects_unequal_lengths_with_a_hint():
    with pytest.raises(ValueError, match="different lengths \\(a: 100, b: 90\\); use SeparationCollator\\(mode='crop'"):
        collate_separation([_item(100, name="a"), _item(90, name="b")])
    with pytest.raises(ValueError, match="different numbers of sources"):
        collate_separation([_item(10, n_src=2), _item(10, n_src=1)])
    with pytest.raises(ValueError, match="same length"):
        collate_separation([{"input_values": torch.zeros(10), "labels": torch.zeros(2, 9)}])


def test_crop_takes_the_same_random_window_from_input_and_labels():
    collator = SeparationCollator("crop", segment_samples=40, generator=torch.Generator().manual_seed(0))
    items = [_item(100), _item(100, offset=500), _item(30, offset=9000)]
    batch = collator(items)
    assert batch["input_values"].shape == (3, 40) and batch["labels"].shape == (3, 2, 40)
    starts = []
    for row in range(2):
        start = batch["input_values"][row, 0] - (0 if row == 0 else 500)
        starts.append(int(start))
        expected = torch.arange(40, dtype=torch.float32) + start + (0 if row == 0 else 500)
        assert torch.equal(batch["input_values"][row], expected)
        assert torch.equal(batch["labels"][row, 1], 2 * expected)  # same window in the labels
        assert 0 <= start <= 60
    # Shorter than the window: zero-padded at the end.
    assert torch.equal(batch["input_values"][2, :30], torch.arange(30, dtype=torch.float32) + 9000)
    assert torch.all(batch["input_values"][2, 30:] == 0) and torch.all(batch["labels"][2, :, 30:] == 0)
    # Reproducible from the generator, and different windows for different draws.
    again = SeparationCollator("crop", segment_samples=40, generator=torch.Generator().manual_seed(0))(items)
    assert torch.equal(again["input_values"], batch["input_values"])
    many = {int(collator([_item(100)])["input_values"][0, 0]) for _ in range(30)}
    assert len(many) > 10


def test_pad_to_longest_with_lengths():
    batch = SeparationCollator("pad")([_item(5), _item(8, offset=100), _item(3, offset=50)])
    assert batch["input_values"].shape == (3, 8) and batch["labels"].shape == (3, 2, 8)
    assert batch["lengths"].tolist() == [5, 8, 3] and batch["lengths"].dtype == torch.int64
    assert torch.equal(batch["input_values"][0], torch.tensor([0, 1, 2, 3, 4, 0, 0, 0], dtype=torch.float32))
    assert torch.all(batch["labels"][2, :, 3:] == 0)


def test_constructor_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        SeparationCollator("trim")
    with pytest.raises(ValueError, match="needs segment_samples"):
        SeparationCollator("crop")
    with pytest.raises(ValueError, match="empty list"):
        collate_separation([])


class _Items(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return _item(50 + 10 * index, offset=index)


def _collate_and_report_sharing(items):
    batch = SeparationCollator("pad")(items)
    batch["allocated_shared"] = torch.tensor(batch["input_values"].is_shared() and batch["labels"].is_shared())
    return batch


def test_inside_a_worker_batches_are_allocated_in_shared_memory():
    loader = torch.utils.data.DataLoader(_Items(), batch_size=2, num_workers=1, collate_fn=_collate_and_report_sharing)
    batches = list(loader)
    assert all(bool(b["allocated_shared"]) for b in batches)
    assert batches[1]["lengths"].tolist() == [70, 80] and batches[1]["input_values"][0, 0] == 2
    assert not _collate_and_report_sharing([_item(5)])["allocated_shared"]  # main process: ordinary memory
