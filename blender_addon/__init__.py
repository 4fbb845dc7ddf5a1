"""Movie Director Metrics: a live health dashboard for AI generation
backends in View3D › Sidebar › "Movie Director".

This module only registers.  The work lives in one module per concern:
``preferences`` (settings), ``properties`` (runtime UI state on the
WindowManager), ``runtime`` (engine, collectors and the one persistent
timer), ``view`` and ``jobs_view`` (what the panels show, no bpy),
``panels``, ``alert_banner`` (firing alerts in the status bar and
the top panel's header), ``operators``, ``charts`` and ``layout_helpers``.  The metrics engine is the bundled
``movie_director_metrics`` wheel (see blender_manifest.toml).
"""

from __future__ import annotations

import bpy

from . import operators, panels, preferences, properties, runtime

# Registration order: property groups before what points at them;
# panels after the operators and lists they draw.
_MODULES = (preferences, properties, operators, panels)


def register() -> None:
    for module in _MODULES:
        for cls in module.classes:
            bpy.utils.register_class(cls)
    properties.register()
    panels.register()
    runtime.register()


def unregister() -> None:
    # The timer and the workers first: nothing may run against classes
    # that are about to go.
    runtime.unregister()
    from . import charts

    charts.clear()
    panels.unregister()
    properties.unregister()
    for module in reversed(_MODULES):
        for cls in reversed(module.classes):
            bpy.utils.unregister_class(cls)
