"""virt-reconcile: a declarative desired-state reconciler for libvirt.

The pipeline, one module per stage:

    manifests -> model -> render -> canonical -> diff -> plan -> execute -> hosts

``cli`` drives it; ``hosts`` is the only module that imports ``libvirt``.
"""

__version__ = "0.1.0"
