"""Rotation math (no nn.Module here): sampling of SO(3), rotating volumes, Wigner-D helpers.

Axis convention (used everywhere in volrot): the spatial axes (D, H, W) of a tensor
`(..., D, H, W)` are the coordinates (x, y, z); rotations act about the voxel-grid centre
`(n-1)/2`, and rotating a volume by R means out(R p) = in(p), i.e. out(q) = in(R^T q).
"""
