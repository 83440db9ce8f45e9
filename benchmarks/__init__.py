"""virt-reconcile's benchmark suite: ``python -m benchmarks [--quick] [--only NAME]``.

Kept empty of imports: ``python -m benchmarks.floor`` (the libvirt floor, a fresh
process of its own) must load nothing but libvirt.
"""
