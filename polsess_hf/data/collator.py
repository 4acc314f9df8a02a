"""Batching separation items into ``{"input_values": (B, T), "labels": (B, n_src, T)}``.

Items are the dicts of :func:`.loading.load_polsess` / :func:`.librimix.load_libri2mix`: ``input_values``
``(time_steps,)`` and ``labels`` ``(n_src, time_steps)``, float32 tensors or arrays.

Three modes:

* ``"stack"`` (PolSESS: every clip is 4 s): stack as is; items of different lengths raise an error that names
  them and points at the other modes.
* ``"crop"`` (training on corpora of varying length, e.g. Libri2Mix): a random window of ``segment_samples``
  per item, the same window for input and labels; items shorter than the window are zero-padded at the end.
  The offsets come from ``torch``'s RNG (or ``generator``): inside DataLoader workers that RNG is seeded from the
  loader's base seed, so crops are reproducible under ``torch.manual_seed`` / the loader's ``generator``.
* ``"pad"`` (evaluation): zero-pad at the end to the longest item and add ``lengths`` ``(B,)`` int64, the true
  lengths, so metrics can be computed on the unpadded part.

Only tensors the model's ``forward(input_values, labels)`` accepts are returned by default; with
``return_metadata=True`` the batch also carries ``variant``, ``id`` (lists of str) and ``is_indoor`` (bool
tensor) for per-variant bookkeeping.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

__all__ = ["SeparationCollator", "collate_separation"]

_MODES = ("stack", "crop", "pad")


def _new_batch(shape: tuple[int, ...], *, zero: bool) -> torch.Tensor:
    """A float32 CPU tensor for a batch. Inside a DataLoader worker it is allocated directly in shared memory, as
    torch's ``default_collate`` does: the worker hands tensors to the main process through shared memory, and a
    tensor created elsewhere would be copied there once more (~10% of a worker's time per PolSESS batch)."""
    numel = int(np.prod(shape))
    tensor = None
    if torch.utils.data.get_worker_info() is not None:
        try:
            storage = torch.empty(0)._typed_storage()._new_shared(numel, device="cpu")
            tensor = torch.empty(0).new(storage).resize_(*shape)
        except (AttributeError, RuntimeError):  # private API moved: fall back to an ordinary allocation
            tensor = None
    if tensor is None:
        tensor = torch.empty(shape, dtype=torch.float32)
    if zero:
        tensor.numpy().fill(0.0)  # numpy, not tensor.zero_(): single-threaded, see __call__
    return tensor


def _as_array(value: Any) -> np.ndarray:
    """float32 numpy view of a CPU tensor or array (no copy when it already is float32)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


class SeparationCollator:
    """Callable ``collate_fn`` for separation items (see the module docstring).

    Args:
        mode: ``"stack"``, ``"crop"`` or ``"pad"``.
        segment_samples: window length for ``"crop"`` (required there, ignored otherwise).
        return_metadata: also return ``variant``, ``id`` and ``is_indoor``.
        generator: ``torch.Generator`` for the crop offsets (default: torch's global RNG).

    Returns (``__call__``):
        ``input_values`` ``(batch_size, time_steps)``, ``labels`` ``(batch_size, n_src, time_steps)``, plus
        ``lengths`` ``(batch_size,)`` in ``"pad"`` mode.
    """

    def __init__(
        self,
        mode: str = "stack",
        *,
        segment_samples: Optional[int] = None,
        return_metadata: bool = False,
        generator: Optional[torch.Generator] = None,
    ):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}")
        if mode == "crop" and (not isinstance(segment_samples, int) or segment_samples < 1):
            raise ValueError(f"mode='crop' needs segment_samples, a positive int, got {segment_samples!r}")
        self.mode = mode
        self.segment_samples = segment_samples
        self.return_metadata = return_metadata
        self.generator = generator

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("cannot collate an empty list of items")
        # Batches are assembled in numpy: single-threaded copies. torch.stack/cat run on the intra-op OpenMP pool,
        # which on a busy machine (or when the trainer's threads compete with loader workers) can wait ~100x
        # longer at its barrier than the copy itself takes.
        inputs = [_as_array(item["input_values"]) for item in items]
        labels = [_as_array(item["labels"]) for item in items]
        for position, (x, y) in enumerate(zip(inputs, labels)):
            if x.ndim != 1 or y.ndim != 2 or y.shape[-1] != x.shape[-1]:
                raise ValueError(
                    f"item {position} ({items[position].get('id', 'no id')}): expected input_values (time_steps,) and "
                    f"labels (n_src, time_steps) of the same length, got {tuple(x.shape)} and {tuple(y.shape)}"
                )
        n_src = {y.shape[0] for y in labels}
        if len(n_src) != 1:
            raise ValueError(f"items have different numbers of sources {sorted(n_src)}; one batch must share a task")
        lengths = [x.shape[-1] for x in inputs]

        true_lengths = None
        n_items, n_src = len(items), labels[0].shape[0]
        if self.mode == "stack":
            if len(set(lengths)) != 1:
                described = ", ".join(f"{item.get('id', i)}: {n}" for i, (item, n) in enumerate(zip(items, lengths)))
                raise ValueError(
                    f"items have different lengths ({described}); use SeparationCollator(mode='crop', "
                    f"segment_samples=...) for training or mode='pad' for evaluation"
                )
            batch_inputs = _new_batch((n_items, lengths[0]), zero=False)
            batch_labels = _new_batch((n_items, n_src, lengths[0]), zero=False)
            np.stack(inputs, out=batch_inputs.numpy())
            np.stack(labels, out=batch_labels.numpy())
        elif self.mode == "crop":
            segment = self.segment_samples
            batch_inputs = _new_batch((n_items, segment), zero=True)
            batch_labels = _new_batch((n_items, n_src, segment), zero=True)
            inputs_view, labels_view = batch_inputs.numpy(), batch_labels.numpy()
            for position, (x, y, n) in enumerate(zip(inputs, labels, lengths)):
                start = 0
                if n > segment:
                    start = int(torch.randint(0, n - segment + 1, (1,), generator=self.generator))
                width = min(segment, n)
                inputs_view[position, :width] = x[start : start + width]
                labels_view[position, :, :width] = y[:, start : start + width]
        else:  # pad
            longest = max(lengths)
            batch_inputs = _new_batch((n_items, longest), zero=True)
            batch_labels = _new_batch((n_items, n_src, longest), zero=True)
            inputs_view, labels_view = batch_inputs.numpy(), batch_labels.numpy()
            for position, (x, y, n) in enumerate(zip(inputs, labels, lengths)):
                inputs_view[position, :n] = x
                labels_view[position, :, :n] = y
            true_lengths = torch.tensor(lengths, dtype=torch.int64)
        batch: dict[str, Any] = {"input_values": batch_inputs, "labels": batch_labels}
        if true_lengths is not None:
            batch["lengths"] = true_lengths

        if self.return_metadata:
            batch["variant"] = [item.get("variant") for item in items]
            batch["id"] = [item.get("id") for item in items]
            batch["is_indoor"] = torch.tensor([bool(item.get("is_indoor", False)) for item in items])
        return batch


#: The PolSESS default: stack fixed-length items, model tensors only.
collate_separation = SeparationCollator("stack")
