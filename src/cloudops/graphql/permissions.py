"""Authorization as Strawberry permission classes, with the viewer from the context."""

from __future__ import annotations

from typing import Any, ClassVar

from strawberry.permission import BasePermission

from cloudops.domain import Role


class _RolePermission(BasePermission):
    needed: ClassVar[Role]
    message: str | None = "You are not allowed to do this."
    error_extensions: dict[str, Any] | None = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        viewer = info.context.viewer
        return viewer is not None and viewer.role.allows(self.needed)


class CanView(_RolePermission):
    needed = Role.VIEWER
    message = "Sign in to read this."
    error_extensions = {"code": "UNAUTHENTICATED"}


class CanOperate(_RolePermission):
    """Running tasks needs the OPERATOR role."""

    needed = Role.OPERATOR
    message = "Running tasks needs the OPERATOR role."


class CanAdminister(_RolePermission):
    """Creating projects and environments needs the ADMIN role."""

    needed = Role.ADMIN
    message = "Configuring projects and environments needs the ADMIN role."
