"""Common tests every separator passes (transformers' ModelTesterMixin habit).

A test module subclasses :class:`SeparatorTesterMixin` and sets ``config_class``, ``model_class`` and
``tiny_config()`` (a configuration small enough to run in well under a second on 2 CPU cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel

import polsess_hf  # noqa: F401  (registers the Auto classes)
from polsess_hf.losses import pit_si_sdr
from polsess_hf.models.outputs import SeparationOutput


class SeparatorTesterMixin:
    config_class: type
    model_class: type
    # lengths checked for "exactly T samples out"; subclasses may extend
    lengths = (1, 7, 15, 16, 17, 100, 1000, 1039, 1041, 2003)
    supports_gradient_checkpointing = False

    def tiny_config(self, **overrides):
        raise NotImplementedError

    def make_model(self, **overrides):
        torch.manual_seed(0)
        return self.model_class(self.tiny_config(**overrides)).eval()

    # -- shapes ---------------------------------------------------------------------------------------------
    @pytest.mark.parametrize("n_src", [1, 2])
    def test_exact_output_length(self, n_src):
        model = self.make_model(n_src=n_src)
        for length in self.lengths:
            with torch.no_grad():
                out = model(torch.randn(2, length))
            assert isinstance(out, SeparationOutput)
            assert out.estimates.shape == (2, n_src, length), f"T={length}"
            assert torch.isfinite(out.estimates).all(), f"T={length}"

    def test_rank3_input_equals_rank2(self):
        model = self.make_model()
        x = torch.randn(2, 800)
        with torch.no_grad():
            a = model(x).estimates
            b = model(x.unsqueeze(1)).estimates
        torch.testing.assert_close(a, b)

    def test_batch_items_are_independent(self):
        model = self.make_model()
        x = torch.randn(3, 900)
        with torch.no_grad():
            full = model(x).estimates
            single = model(x[1:2]).estimates
        torch.testing.assert_close(full[1:2], single, rtol=1e-4, atol=1e-5)

    @pytest.mark.parametrize(
        "bad, message",
        [
            (torch.randn(800), "shape"),
            (torch.randn(2, 2, 800), "mono"),
            (torch.randn(1, 1, 1, 800), "shape"),
            (torch.zeros(2, 800, dtype=torch.int16), "floating-point"),
            (torch.zeros(2, 0), "0 time steps"),
        ],
    )
    def test_bad_input_is_a_clear_value_error(self, bad, message):
        model = self.make_model()
        with pytest.raises(ValueError, match=message):
            model(bad)

    # -- loss -------------------------------------------------------------------------------------------------
    def test_loss_is_negative_pit_si_sdr_and_permutation_invariant(self):
        model = self.make_model(n_src=2)
        x = torch.randn(2, 800)
        labels = torch.randn(2, 2, 800)
        with torch.no_grad():
            out = model(x, labels=labels)
            swapped = model(x, labels=labels.flip(1))
        expected = -pit_si_sdr(out.estimates, labels)[0].mean()
        torch.testing.assert_close(out.loss, expected)
        torch.testing.assert_close(out.loss, swapped.loss)

    def test_labels_with_wrong_shape_are_refused(self):
        model = self.make_model(n_src=2)
        with pytest.raises(ValueError, match="labels"):
            model(torch.randn(2, 800), labels=torch.randn(2, 3, 800))

    def test_backward_reaches_every_parameter(self):
        model = self.make_model(n_src=2).train()
        out = model(torch.randn(2, 1200), labels=torch.randn(2, 2, 1200))
        out.loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
        assert not missing, f"no finite gradient for {missing}"

    # -- config ------------------------------------------------------------------------------------------------
    def test_config_refuses_unknown_keys(self):
        with pytest.raises(Exception, match="not_a_field"):
            self.tiny_config(not_a_field=3)

    def test_config_refuses_bad_n_src(self):
        with pytest.raises(Exception, match="n_src"):
            self.tiny_config(n_src=0)

    def test_config_carries_rate_and_sources(self):
        config = self.config_class()
        assert config.sampling_rate == 8000
        assert config.n_src == 2

    # -- save / load -----------------------------------------------------------------------------------------
    def test_save_load_round_trip_with_auto_classes(self, tmp_path):
        model = self.make_model()
        model.save_pretrained(tmp_path)
        files = set(os.listdir(tmp_path))
        assert "model.safetensors" in files and "config.json" in files
        assert not any(f.endswith(".bin") for f in files)
        config = json.loads((tmp_path / "config.json").read_text())
        assert config["model_type"] == self.config_class.model_type
        assert set(config["auto_map"]) == {"AutoConfig", "AutoModel"}
        assert isinstance(AutoConfig.from_pretrained(tmp_path), self.config_class)
        loaded = AutoModel.from_pretrained(tmp_path).eval()
        assert type(loaded) is self.model_class
        x = torch.randn(1, 1000)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x).estimates, model(x).estimates, rtol=0, atol=0)

    def test_trust_remote_code_in_a_process_without_polsess_hf(self, tmp_path):
        model = self.make_model()
        model.save_pretrained(tmp_path / "model")
        x = torch.randn(1, 1000)
        torch.save(x, tmp_path / "x.pt")
        with torch.no_grad():
            torch.save(model(x).estimates, tmp_path / "expected.pt")
        script = textwrap.dedent(
            f"""
            import sys, torch
            from transformers import AutoModel
            model = AutoModel.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True).eval()
            x = torch.load({str(tmp_path / 'x.pt')!r})
            with torch.no_grad():
                out = model(x).estimates
            expected = torch.load({str(tmp_path / 'expected.pt')!r})
            assert torch.equal(out, expected), (out - expected).abs().max()
            leaked = sorted(m for m in sys.modules if m.split('.')[0] == 'polsess_hf')
            assert not leaked, leaked
            print("REMOTE_OK", type(model).__module__)
            """
        )
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
        result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "REMOTE_OK transformers_modules" in result.stdout

    # -- gradient checkpointing ----------------------------------------------------------------------------
    def test_gradient_checkpointing_gives_same_loss_and_gradients(self):
        if not self.supports_gradient_checkpointing:
            pytest.skip(f"{self.model_class.__name__} does not use gradient checkpointing")
        x = torch.randn(2, 1600)
        labels = torch.randn(2, 2, 1600)
        results = []
        for enable in (False, True):
            model = self.make_model(n_src=2).train()
            if enable:
                model.gradient_checkpointing_enable()
                assert model.is_gradient_checkpointing
            out = model(x, labels=labels)
            out.loss.backward()
            results.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        torch.testing.assert_close(results[0][0], results[1][0])
        for name, grad in results[0][1].items():
            torch.testing.assert_close(results[1][1][name], grad, rtol=1e-4, atol=1e-6, msg=name)
