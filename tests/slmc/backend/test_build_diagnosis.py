"""TVM build failures become BuildError naming the pass that was running or the kernel that fails."""

import pytest
import tvm
from tvm import relax

from slmc.backend.build_diagnosis import PassTracker, tracking_passes
from slmc.errors import BuildError
from slmc.backend.lowering import RelaxProgram, build


def single_op_program(make_op, ty):
    bb = relax.BlockBuilder()
    x = relax.Var("x", ty)
    with bb.function("main", [x], attrs={"num_input": 1}):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(make_op(x)))
        bb.emit_func_output(out)
    return RelaxProgram(bb.get(), [], [], 1)


def test_a_code_generation_failure_names_the_kernel(host_target):
    """A cumulative sum over bool: LLVM codegen's CreateAdd fails a bare C++ check without naming anything."""
    program = single_op_program(lambda x: relax.op.cumsum(x, axis=0), relax.TensorType([8], "bool"))
    with pytest.raises(BuildError) as err:
        build(program, host_target)
    message = str(err.value)
    assert message.startswith("TVM could not build the model for target 'host' generating code for kernel 'cumsum': ")
    assert "InternalError: Check failed: (t.MatchesCode(DLDataTypeCode::kDLFloat))" in message
    assert err.value.exit_code == 1 and isinstance(err.value.__cause__, tvm.error.InternalError)


def test_a_python_error_inside_a_tvm_pass_names_the_pass(host_target):
    """full_like of a tensor of unknown shape: TVM's own legalization (run by FoldConstant) raises an
    AttributeError, which used to escape unwrapped."""
    program = single_op_program(lambda x: relax.op.full_like(x, relax.const(1.0, "float32")),
                                relax.TensorType(None, "float32", ndim=2))
    with pytest.raises(BuildError, match=r"in pass 'slmc_deterministic_pipeline' > 'slmc_build_pipeline' > "
                                         r"'sequential' > 'FoldConstant': AttributeError") as err:
        build(program, host_target)
    assert isinstance(err.value.__cause__, AttributeError)


def test_the_tracker_is_removed_afterwards():
    context = tvm.transform.PassContext.current()
    before = len(context.instruments)
    tracker = PassTracker()
    with tracking_passes(tracker):
        assert len(context.instruments) == before + 1
        relax.transform.FoldConstant()(tvm.IRModule())
    assert len(context.instruments) == before and tracker.running == []
