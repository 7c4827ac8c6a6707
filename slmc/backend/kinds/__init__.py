"""The built-in backends, one module per target kind; importing this package registers them all.

Adding a kind is one new module here, and no edit anywhere else: subclass
``slmc.backend.base.Backend`` (or an existing kind's backend, to reuse its phases), set ``tvm_kinds``
and whatever ``TargetKind`` attributes differ, override the hooks that differ, and decorate the
class with ``@register_backend("<kind>")`` (``slmc.spec.backend_registry``). Every module of this
package is imported when the registry is first asked, so a descriptor with ``kind: <kind>``
validates and ``slmc compile`` builds through the new backend. Keep the module's top-level
imports light (no TVM, torch or onnx): descriptors are validated without them; import inside the
phase methods instead.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
