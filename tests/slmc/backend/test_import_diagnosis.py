"""An op TVM's PyTorch importer cannot convert is named with its graph node and the model's source line."""

import os
import shutil
import subprocess
import textwrap

import pytest
import torch

import slmc
from slmc.errors import LoweringError, UnsupportedOpError
from slmc.backend.import_diagnosis import source_location

HERE = os.path.abspath(__file__)


def line_of(snippet: str) -> int:
    with open(HERE, encoding="utf-8") as f:
        return next(i for i, line in enumerate(f, 1) if snippet in line and "line_of" not in line)


class Spectral(torch.nn.Module):
    """A real FFT feature: aten.fft_rfft, which decomposes to _fft_r2c (no converter in TVM 0.27)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(9, 4)

    def forward(self, x):
        spectrum = torch.fft.rfft(x, dim=-1).abs()
        return self.proj(spectrum)


class TwoSpecialFunctions(torch.nn.Module):
    def forward(self, x):
        y = torch.digamma(x.abs() + 1.0)
        return y + torch.special.erfcx(x)


class Inverse(torch.nn.Module):
    """linalg.inv exports with an error check behind ``with_effects``; TVM refuses its token input."""

    def forward(self, x):
        return torch.linalg.inv(x @ x.T + torch.eye(4))


def test_unsupported_op_names_node_op_and_source_line(tmp_path):
    with pytest.raises(UnsupportedOpError) as err:
        slmc.compile(Spectral(), out=tmp_path / "fft", example_inputs=(torch.randn(2, 16),))
    e = err.value
    assert isinstance(e, LoweringError) and e.exit_code == 1
    assert (e.node, e.op) == ("fft_rfft", "aten.fft_rfft.default")
    assert e.location == f"{HERE}:{line_of('torch.fft.rfft(x, dim=-1)')} in forward"
    message = str(e)
    assert message.startswith("TVM's PyTorch importer cannot convert node 'fft_rfft' (aten.fft_rfft.default, "
                              "decomposed to _fft_r2c.default for TVM) at ")
    assert "`spectrum = torch.fft.rfft(x, dim=-1).abs()`" in message
    assert "AssertionError" not in message and not (tmp_path / "fft").exists()
    assert e.to_json()["node"] == "fft_rfft" and e.to_json()["location"] == e.location


def test_every_unsupported_node_is_listed(tmp_path):
    with pytest.raises(UnsupportedOpError) as err:
        slmc.compile(TwoSpecialFunctions(), out=tmp_path / "special", example_inputs=(torch.randn(4, 4),))
    assert err.value.node == "digamma" and err.value.location.endswith(f":{line_of('torch.digamma(x.abs()')} in forward")
    assert "also unsupported: 'special_erfcx' (aten.special_erfcx.default)" in str(err.value)


def test_an_op_behind_a_side_effect_is_named_instead_of_a_token_error(tmp_path):
    with pytest.raises(UnsupportedOpError) as err:
        slmc.compile(Inverse(), out=tmp_path / "inv", example_inputs=(torch.randn(4, 4),))
    assert err.value.node == "linalg_inv" and err.value.op == "aten.linalg_inv.default"
    assert "InputKind.TOKEN" not in str(err.value)


def test_the_cli_reports_it_without_a_traceback(tmp_path):
    (tmp_path / "spectral_model.py").write_text(textwrap.dedent("""
        import torch

        class Spectral(torch.nn.Module):
            def forward(self, x):
                return torch.fft.rfft(x, dim=-1).abs()

        def build():
            return Spectral(), (torch.randn(2, 16),)
    """))
    exe = shutil.which("slmc") or pytest.fail("the slmc console script is not installed (pip install -e .)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([exe, "compile", "-m", "spectral_model:build", "-o", "out"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    assert "node 'fft_rfft' (aten.fft_rfft.default" in result.stderr
    assert f"{tmp_path / 'spectral_model.py'}:6 in forward" in result.stderr
    assert "Traceback" not in result.stderr


def test_source_location_skips_torch_frames():
    torch_file = os.path.join(os.path.dirname(torch.__file__), "nn", "modules", "linear.py")
    trace = (f'File "/home/u/model.py", line 12, in forward\n    return self.proj(x)\n'
             f'File "{torch_file}", line 134, in forward\n    return F.linear(input, self.weight, self.bias)')
    assert source_location(trace) == ("/home/u/model.py:12 in forward", "return self.proj(x)")
    assert source_location(f'File "{torch_file}", line 1, in f\n    x') == (None, None)
    assert source_location(None) == (None, None)


class _RepeatByBatch(torch.nn.Module):
    def forward(self, x):
        return x.repeat(x.shape[0], 1) * 2  # repeat-by-batch


def test_a_conversion_that_fails_inside_a_converter_names_node_op_and_source():
    """``aten.repeat`` has a converter, but not for a symbolic repeat count: the node is found in TVM's traceback."""
    from slmc.backend.lowering import to_relax
    from slmc.graph.ir import ModelSpec, trace

    batch = torch.export.Dim("batch", min=2, max=8)
    spec = ModelSpec(module=_RepeatByBatch(), example_inputs=(torch.randn(3, 4),), dynamic_shapes=({0: batch},), name="rep")
    with pytest.raises(UnsupportedOpError) as info:
        to_relax(trace(spec))
    error = info.value
    assert error.node == "repeat" and error.op == "aten.repeat.default"
    assert error.location.endswith(f"test_import_diagnosis.py:{line_of('# repeat-by-batch')} in forward")
    assert "failed converting node 'repeat'" in str(error) and "relax.op.tile" in str(error)
