"""Collision queries of the inspection cell: pinocchio over coal geometry, the cell's own links,
its static bodies and the part (:meth:`~.cell.CellModel.collision_checker` builds one).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .cell import CellModel

__all__ = ["CollisionChecker"]


class CollisionChecker:
    """Collision queries of the cell (pinocchio ``computeCollisions`` over coal geometry).

    Checked pairs: every arm link (including the sensor body) against every other non-adjacent
    arm link, the static cell bodies (floor, table, fixture), the turntable and the part.
    Pairs of the cell's own bodies already in contact at the home configuration are skipped and
    listed in :attr:`disabled_pairs` (MoveIt's "default" rule); pairs with the part never are.

    Args:
        cell: the :class:`CellModel`.
        part_mesh: optional trimesh of the part (metres, part frame).
        part_collision: ``hull`` (convex hull; conservative and fast) or ``mesh`` (BVH of the
            triangles).
        margin: required clearance [m] (coal security margin).
    """

    def __init__(self, cell: CellModel, part_mesh=None, *, part_collision: str = "hull", margin: float = 0.01):
        import coal
        pin = cell._pin
        self.cell = cell
        self.margin = float(margin)
        if part_collision not in ("hull", "mesh"):
            raise ValueError(f"part_collision must be 'hull' or 'mesh', got {part_collision!r}")
        gm = cell.geometry_model().copy()
        model = cell.model
        if part_mesh is not None:
            from cosarad_ros.core.geometry import check_mesh

            # qhull / coal crash on flat or degenerate input: refuse it with a message instead
            check_mesh(part_mesh, name="part mesh", metres=False)
            verts = np.asarray(part_mesh.vertices, dtype=np.float64)
            faces = np.asarray(part_mesh.faces, dtype=np.int64)
            if part_collision == "hull":
                hull = part_mesh.convex_hull
                verts = np.asarray(hull.vertices, dtype=np.float64)
                faces = np.asarray(hull.faces, dtype=np.int64)
            bvh = coal.BVHModelOBBRSS()
            bvh.beginModel(len(faces), len(verts))
            bvh.addVertices(np.ascontiguousarray(verts))
            bvh.addTriangles(np.ascontiguousarray(faces))
            bvh.endModel()
            geom = bvh
            if part_collision == "hull":
                bvh.buildConvexHull(True, "Qt")
                geom = bvh.convex
            fid = model.getFrameId(cell.part_frame)
            frame = model.frames[fid]
            obj = pin.GeometryObject("part_mesh", frame.parentJoint, fid, frame.placement, geom)
            gm.addGeometryObject(obj)
        self.geom_model = gm
        arm_joints = {model.getJointId(n) for n in cell.arm_joint_names}
        on_arm = [cell._on_arm(g.parentJoint, arm_joints) for g in gm.geometryObjects]
        links = [("part" if g.name == "part_mesh" else cell.link_of(g)) for g in gm.geometryObjects]
        adjacent = cell.adjacent_links()
        candidates = []
        for a in range(gm.ngeoms):
            for b in range(a + 1, gm.ngeoms):
                if not (on_arm[a] or on_arm[b]):
                    continue  # static-static and turntable-static never change
                if links[a] == links[b] or frozenset((links[a], links[b])) in adjacent:
                    continue
                candidates.append((a, b))
        for a, b in candidates:
            gm.addCollisionPair(pin.CollisionPair(a, b))
        self.data = model.createData()
        self.geom_data = pin.GeometryData(gm)
        for req in self.geom_data.collisionRequests:
            req.security_margin = self.margin
        self._links = links
        # MoveIt's "default" rule: pairs of the cell's own bodies touching at home are not
        # meaningful (the part is not one of them: a part the home pose hits is a real collision)
        contact = [k for k in self._contacts(cell.home)
                   if "part" not in (links[gm.collisionPairs[k].first], links[gm.collisionPairs[k].second])]
        self.disabled_pairs: tuple[tuple[str, str], ...] = tuple(sorted(
            (links[gm.collisionPairs[k].first], links[gm.collisionPairs[k].second]) for k in contact))
        if contact:
            keep = [(p.first, p.second) for k, p in enumerate(gm.collisionPairs) if k not in set(contact)]
            gm.removeAllCollisionPairs()
            for a, b in keep:
                gm.addCollisionPair(pin.CollisionPair(a, b))
            self.geom_data = pin.GeometryData(gm)
            for req in self.geom_data.collisionRequests:
                req.security_margin = self.margin
        self.pairs: tuple[tuple[str, str], ...] = tuple(
            (links[p.first], links[p.second]) for p in gm.collisionPairs)

    def _contacts(self, q) -> list[int]:
        pin = self.cell._pin
        pin.computeCollisions(self.cell.model, self.data, self.geom_model, self.geom_data,
                              np.asarray(q, dtype=np.float64), False)
        return [k for k, r in enumerate(self.geom_data.collisionResults) if r.isCollision()]

    def in_collision(self, q) -> bool:
        """True when any checked pair is closer than the margin at ``q``."""
        pin = self.cell._pin
        q = self.cell.check_q(q)
        return bool(pin.computeCollisions(self.cell.model, self.data, self.geom_model, self.geom_data, q, True))

    def colliding_pairs(self, q) -> list[tuple[str, str]]:
        """Names of the link pairs closer than the margin at ``q``."""
        q = self.cell.check_q(q)
        gm = self.geom_model
        return [(self._links[gm.collisionPairs[k].first], self._links[gm.collisionPairs[k].second])
                for k in self._contacts(q)]

    def segment_free(self, q_a, q_b, *, max_step_rad: float = 0.03) -> bool:
        """Check the straight joint-space segment ``q_a -> q_b`` at steps of at most
        ``max_step_rad`` on any joint (ends included).
        """
        q_a, q_b = self.cell.check_q(q_a, name="q_a"), self.cell.check_q(q_b, name="q_b")
        n = max(1, int(np.ceil(np.max(np.abs(q_b - q_a)) / max_step_rad)))
        for t in np.linspace(0.0, 1.0, n + 1):
            if self.in_collision(q_a + t * (q_b - q_a)):
                return False
        return True
