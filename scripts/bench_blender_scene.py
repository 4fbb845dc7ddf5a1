"""Builds the benchmark's .blend in a background Blender (``blender -b
--factory-startup --python bench_blender_scene.py -- OUT.blend``).

Made apart from the GUI run so that the measuring process opens a saved,
clean file: every change the scene needs (keyframes, render settings) is
saved here, and ``bpy.data.is_dirty`` in the GUI then reports only what
happened while measuring.

The scene is the factory cube, light and camera:

- the cube turns (two keyframes, frames 1..250), so every playback frame
  re-evaluates the depsgraph and redraws the viewport;
- the 3D view without overlays (see below);
- ``render.fps`` 1000 with sync "play every frame": the playback timer is
  always due, so playback runs as fast as the main thread can draw and
  the frame rate measures throughput (at the default 24 fps it would be
  capped and hide a loss);
- Cycles on the CPU at 320x200, 32 samples, no denoiser: a render of
  about a second that competes with the collectors for the same cores.
"""

import sys

import bpy

out = sys.argv[sys.argv.index("--") + 1]
scene = bpy.context.scene
cube = bpy.data.objects["Cube"]
scene.frame_start, scene.frame_end = 1, 250
cube.rotation_euler = (0.0, 0.0, 0.0)
cube.keyframe_insert("rotation_euler", frame=1)
cube.rotation_euler = (0.0, 0.0, 6.283185307)
cube.keyframe_insert("rotation_euler", frame=250)
scene.render.fps = 1000
scene.render.fps_base = 1.0
scene.sync_mode = "NONE"

scene.render.engine = "CYCLES"
scene.cycles.device = "CPU"
scene.cycles.samples = 32
scene.cycles.use_denoising = False
scene.cycles.use_adaptive_sampling = False
scene.render.resolution_x, scene.render.resolution_y = 320, 200
scene.render.resolution_percentage = 100
# The viewport stays in Solid shading (the render engine only matters for
# F12), without overlays: with them, llvmpipe on two busy cores drew ~15
# fps at 640x400, below the >= 25 fps the targets were set for; the
# driver also turns viewport anti-aliasing off (a preference).
for screen in bpy.data.screens:
    for area in screen.areas:
        for space in area.spaces:
            if space.type == "VIEW_3D":
                space.overlay.show_overlays = False
bpy.ops.wm.save_as_mainfile(filepath=out, compress=False)
print(f"bench scene saved: {out}")
