"""selfsup's built-in plugin: every concrete part and bundle.

It registers through the ``selfsup.plugins`` entry-point group exactly as a third-party
package does (see pyproject.toml): the entry point names :mod:`selfsup.plugins.plugin`, whose
``selfsup_register`` hook calls ``register(registry)`` of each subpackage. This package
itself imports nothing, so a part (``selfsup.plugins.common.samplers``) loads only what it uses.
"""
