"""Real-libvirt test bed for the e2e tier (no reconciler logic lives here).

* :mod:`tests.testbed.daemon`: ``ensure_system_libvirtd()``, ``start_isolated_host()``,
  ``stop_all()``, ``cleanup_prefixed()``, ``ensure_event_loop()``.
* :mod:`tests.testbed.guest`: ``build_guest()``, ``guest_domain_xml()``,
  ``wait_for_ready()``, ``make_scratch_dir()``; ``python -m tests.testbed.guest`` builds
  the guest.
* :mod:`tests.testbed.cli`: ``vr()`` runs ``python -m reconciler`` in a fresh process
  (optionally armed with the test-only crash hook).

Submodules are not imported here, so ``python -m tests.testbed.guest`` runs cleanly.
See ``tests/e2e/conftest.py`` for the fixtures, ``scripts/setup-testbed.sh`` for set-up.
"""
