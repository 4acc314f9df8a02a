"""Curriculum schedule: validation, stage lookup, LR-scheduler gating, stage switches reaching DataLoader workers."""

import pytest
import torch

from polsess_hf.data import (
    STANDARD_CURRICULUM,
    Curriculum,
    SeparationCollator,
    load_polsess,
    resolve_curriculum,
    standard_curriculum,
)

THESIS_YAML = [
    {"epoch": 1, "variants": ["C", "R"]},
    {"epoch": 3, "variants": ["C", "R", "SR", "S"]},
    {"epoch": 5, "variants": ["R", "SR", "S", "SE", "ER", "E", "SER"], "lr_scheduler": "start"},
]


def test_standard_schedule_is_the_thesis_default():
    assert STANDARD_CURRICULUM.to_config() == THESIS_YAML
    assert Curriculum.from_config(THESIS_YAML) == STANDARD_CURRICULUM
    assert resolve_curriculum("standard") == STANDARD_CURRICULUM
    expected = {1: ("C", "R"), 2: ("C", "R"), 3: ("C", "R", "SR", "S"), 4: ("C", "R", "SR", "S")}
    for epoch, variants in expected.items():
        assert STANDARD_CURRICULUM.variants_at(epoch) == variants
        assert not STANDARD_CURRICULUM.lr_scheduler_active(epoch)
    for epoch in (5, 6, 50):
        assert STANDARD_CURRICULUM.variants_at(epoch) == ("R", "SR", "S", "SE", "ER", "E", "SER")
        assert STANDARD_CURRICULUM.lr_scheduler_active(epoch)
    assert [e for e in range(1, 8) if STANDARD_CURRICULUM.stage_changes_at(e)] == [1, 3, 5]
    assert "C" not in STANDARD_CURRICULUM.variants_at(5)


def test_variations_seen_in_thesis_configs():
    assert [s.epoch for s in standard_curriculum((1, 4, 10)).stages] == [1, 4, 10]
    assert resolve_curriculum("standard_1_3_8").variants_at(7) == ("C", "R", "SR", "S")
    assert "C" in resolve_curriculum("standard_keep_clean").variants_at(9)  # SepFormer/SPMamba baselines
    all_noisy = ["R", "S", "SR", "E", "ER", "SE", "SER"]
    no_curriculum = Curriculum([{"epoch": 1, "variants": all_noisy, "lr_scheduler": "start"}])
    assert no_curriculum.lr_scheduler_active(1)


def test_scheduler_stays_on_once_started_and_never_runs_without_start():
    schedule = Curriculum(
        [
            {"epoch": 1, "variants": ["R"]},
            {"epoch": 2, "variants": ["R", "SR"], "lr_scheduler": "start"},
            {"epoch": 4, "variants": ["SER"]},
        ],
        task="ES",
    )
    assert [schedule.lr_scheduler_active(e) for e in range(1, 6)] == [False, True, True, True, True]
    never = Curriculum([{"epoch": 1, "variants": ["C"]}, {"epoch": 3, "variants": ["SER"]}])
    assert not any(never.lr_scheduler_active(e) for e in range(1, 10))


def test_epochs_before_the_first_entry_use_the_first_stage():
    schedule = Curriculum([{"epoch": 3, "variants": ["R"]}, {"epoch": 6, "variants": ["SER"]}])
    assert schedule.variants_at(1) == schedule.variants_at(5) == ("R",)
    assert schedule.variants_at(6) == ("SER",)


@pytest.mark.parametrize(
    "entries,message",
    [
        ([], "at least one stage"),
        ([{"epoch": 1, "variants": ["C"]}, {"epoch": 1, "variants": ["R"]}], "strictly ascending, got \\[1, 1\\]"),
        ([{"epoch": 3, "variants": ["C"]}, {"epoch": 2, "variants": ["R"]}], "strictly ascending"),
        ([{"epoch": 0, "variants": ["C"]}], "epoch must be an integer ≥ 1"),
        ([{"epoch": 1.5, "variants": ["C"]}], "epoch must be an integer ≥ 1"),
        ([{"epoch": 1, "variants": ["C", "XYZ"]}], "unknown MM-IPC variant\\(s\\) \\['XYZ'\\] in curriculum entry 0"),
        ([{"epoch": 1, "variants": []}], "has no variants"),
        ([{"epoch": 1, "variants": "SER"}], "got the string 'SER'"),
        ([{"epoch": 1, "variants": ["R", "R"]}], "more than once"),
        ([{"epoch": 1, "variants": ["C"], "lr_scheduler": "on"}], "lr_scheduler must be 'start'"),
        ([{"epoch": 1, "variants": ["C"], "lr": 1e-3}], "unknown key\\(s\\) \\['lr'\\]"),
        ([{"variants": ["C"]}], "lacks the key 'epoch'"),
        (["C"], "must be a mapping"),
    ],
)
def test_invalid_schedules_are_rejected(entries, message):
    with pytest.raises(ValueError, match=message):
        Curriculum(entries)


def test_task_is_checked_and_must_match_the_dataset(mini_root, cache_dir):
    with pytest.raises(ValueError, match="task must be one of"):
        Curriculum(THESIS_YAML, task="XX")
    with pytest.warns(UserWarning, match="train task ES on variant C, whose input is exactly the target"):
        Curriculum(THESIS_YAML, task="ES")
    with pytest.raises(ValueError, match="built for task 'SB' but the dataset task is 'ES'"):
        load_polsess(mini_root, "train", task="ES", curriculum=STANDARD_CURRICULUM, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="unknown curriculum name"):
        resolve_curriculum("fancy")
    with pytest.raises(ValueError, match="either variants or curriculum"):
        load_polsess(mini_root, "train", variants=["C"], curriculum="standard", cache_dir=cache_dir)


def test_dataset_switches_stage_and_row_set_at_epoch_boundaries(mini_root, cache_dir):
    # Family-changing stages: the row set itself changes (first N indoor rows, then first N outdoor rows).
    schedule = [{"epoch": 1, "variants": ["R"]}, {"epoch": 2, "variants": ["SE", "S"]}, {"epoch": 3, "variants": ["C"]}]
    dataset = load_polsess(mini_root, "train", curriculum=schedule, max_samples=5, cache_dir=cache_dir)
    stage_rows = {}
    for epoch in (1, 2, 3):
        dataset.set_epoch(epoch)
        stage_rows[epoch] = dataset.rows.tolist()
        assert len(dataset) == 5
    indoor = [dataset.index[r]["is_indoor"] for r in range(len(dataset.index))]
    assert stage_rows[1] == [r for r, flag in enumerate(indoor) if flag][:5]
    assert stage_rows[2] == [r for r, flag in enumerate(indoor) if not flag][:5]
    assert stage_rows[3] == list(range(5))


@pytest.mark.parametrize("persistent", [True, False])
def test_stage_switch_reaches_two_dataloader_workers(mini_root, cache_dir, persistent):
    """The thesis mutated the dataset in place, which persistent workers never saw; the shared epoch fixes that."""
    schedule = [
        {"epoch": 1, "variants": ["R"]},
        {"epoch": 2, "variants": ["SE", "S"]},
        {"epoch": 3, "variants": ["C", "R"]},
    ]
    dataset = load_polsess(mini_root, "train", curriculum=schedule, max_samples=6, cache_dir=cache_dir)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=2,
        shuffle=True,
        num_workers=2,
        persistent_workers=persistent,
        collate_fn=SeparationCollator(return_metadata=True),
        generator=torch.Generator().manual_seed(0),
    )
    seen = {}
    for epoch in (1, 2, 3, 2):  # going back to a stage works too
        dataset.set_epoch(epoch)
        batches = list(loader)
        seen[epoch] = ([v for b in batches for v in b["variant"]], sorted(i for b in batches for i in b["id"]))
        expected_ids = sorted(dataset[i]["id"] for i in range(len(dataset)))
        assert seen[epoch][1] == expected_ids, f"epoch {epoch}: workers served rows of another stage"
    assert set(seen[1][0]) == {"R"}
    assert set(seen[2][0]) <= {"SE", "S"} and set(seen[2][0])
    assert set(seen[3][0]) <= {"C", "R"}
    # Variants drawn in the workers equal those drawn in the main process for the same epoch and index.
    dataset.set_epoch(3)
    main_process = sorted((dataset[i]["id"], dataset[i]["variant"]) for i in range(len(dataset)))
    batches = list(loader)
    in_workers = sorted((i, v) for b in batches for i, v in zip(b["id"], b["variant"]))
    assert in_workers == main_process
