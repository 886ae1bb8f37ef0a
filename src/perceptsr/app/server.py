"""`perceptsr app`: serve the page locally, offline, one inference at a time.

Gradio is an optional extra, imported only here, after its analytics are switched off and its cache is pointed
at a private temporary folder (uploads and results live there and go when the server stops). The server binds
127.0.0.1 unless a host is given, serves no file but its own uploads and results (the models folder is blocked
too: weights are never sent), and the theme uses system fonts, so the page loads nothing from the internet.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from perceptsr.errors import InputError
from perceptsr.inference.upscale import RunOptions

INSTALL_HINT = "the app needs Gradio: pip install perceptsr[app]"
LOCAL_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_UPLOAD = "1gb"
SYSTEM_FONTS = ("system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif")
MONO_FONTS = ("ui-monospace", "Menlo", "Consolas", "monospace")
# Set before Gradio is imported: it reads them at import time.
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def gradio_available() -> bool:
    return importlib.util.find_spec("gradio") is not None


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def host_warning(host: str | None) -> str | None:
    """One line when the page is reachable from other machines, else None."""
    if host is None or host in (LOCAL_HOST, "localhost"):
        return None
    return (f"perceptsr app: listening on {host}, not only this machine: anyone who can reach it can upload images "
            f"and run models here")


def cmd_app(*, models_dir: Path | None, host: str | None, port: int | None, max_pixels: int, run: RunOptions) -> int:
    """Serve the app until interrupted. Without Gradio: one line naming the extra to install, exit 2."""
    if not gradio_available():
        raise InputError(INSTALL_HINT)
    work_dir = Path(tempfile.mkdtemp(prefix="perceptsr-app-"))
    os.environ.update(OFFLINE_ENV)
    os.environ["GRADIO_TEMP_DIR"] = str(work_dir / "gradio")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so the uploads and results are removed on `kill` too
    try:
        page, launch = prepare(models_dir=models_dir, host=host, port=port, max_pixels=max_pixels, run=run,
                               work_dir=work_dir)
        page.launch(**launch)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


def prepare(*, models_dir: Path | None, host: str | None, port: int | None, max_pixels: int, run: RunOptions,
            work_dir: Path) -> tuple:
    """The page and its launch settings: the part of `cmd_app` that needs Gradio."""
    import gradio as gr

    from perceptsr.app.runner import build_catalog
    from perceptsr.app.ui import CSS, Settings, build
    from perceptsr.inference.upscale import pick_device

    catalog = build_catalog(models_dir)
    if not catalog.models:
        raise InputError("no models to offer: this install has no bundled model and --models-dir holds no release "
                         "file (.safetensors / .onnx)")
    pick_device(run.device)  # a missing CUDA device is one line now, not on the first request
    page = build(Settings(catalog=catalog, run=run, max_pixels=max_pixels, work_dir=work_dir))
    page.queue(default_concurrency_limit=1)
    warning = host_warning(host)
    if warning:
        print(warning, file=sys.stderr)  # noqa: T201
    blocked = [str(models_dir.resolve())] if models_dir is not None else []
    theme = gr.themes.Default(font=list(SYSTEM_FONTS), font_mono=list(MONO_FONTS))
    launch = dict(server_name=host or LOCAL_HOST, server_port=port or DEFAULT_PORT, share=False, inbrowser=False,
                  allowed_paths=[], blocked_paths=blocked, max_file_size=MAX_UPLOAD, ssr_mode=False,
                  mcp_server=False, enable_monitoring=False, footer_links=[], theme=theme, css=CSS, quiet=True,
                  show_error=False)
    return page, launch
