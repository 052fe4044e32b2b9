"""The detection API (FastAPI + uvicorn): ``python -m tasks.serve`` or ``vigil serve``. See docs/serving.md."""

from tasks.serve.app import create_app

__all__ = ["create_app"]
