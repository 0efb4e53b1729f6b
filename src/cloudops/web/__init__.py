"""The web app: Starlette routes around the runtime."""
