"""The data layer: procedural CAD parts, package meshes, defects with point masks, simulated
scans, Real3D-AD / Anomaly-ShapeNet readers and writers, and the synthetic benchmark generator.

Modules (import what you need; nothing heavy is imported here):

* :mod:`.parts` -- procedural parts (manifold3d CSG) with recorded dimensions and holes.
* :mod:`.package_meshes` -- real meshes from installed packages (occt-misc, pybullet_data).
* :mod:`.defects` -- bulge, sink, scratch, crack, hole, bend, broken, hole deviations.
* :mod:`.scans` -- full-surface and single-view ray-cast scans, noise, density, pose.
* :mod:`.datasets` -- benchmark layouts (read, write, GT transfer).
* :mod:`.synth` -- ``cosarad synth``: the benchmark generator.
* :mod:`.gallery` -- PNG pictures of clouds with anomalous points highlighted.
"""
