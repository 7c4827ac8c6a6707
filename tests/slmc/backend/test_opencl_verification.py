"""slmc.backend.opencl_verification: the GPU backend's hook (compile check, then execution on PoCL).

Its positive path (an OpenCL target, verification on) runs in the slow CLI tests of
tests/slmc/backend/test_opencl_kernel_check.py, which read ``verification.opencl`` and ``verification.gpu_kernels``.
"""

from slmc.artifact.manifest import Verification
from slmc.backend.opencl_verification import opencl_verification
from slmc.spec.target import load_target

MALI = load_target("mali-g710")


def test_the_hook_leaves_cpu_targets_disabled_verification_and_executed_artifacts_alone():
    # None for the build: the hook must return before it looks at one.
    report = Verification.skipped("r")
    assert opencl_verification(report, None, None, load_target("arm-cortex-a76"), True) is report
    assert opencl_verification(report, None, None, MALI, False) is report
    executed = Verification(executed=True, passed=True)
    assert opencl_verification(executed, None, None, MALI, True) is executed
