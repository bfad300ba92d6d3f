"""`zfcaffe serve`: the deep-visualization toolbox in a browser, for any Caffe model.

model.py answers for images, layers and units (no web); app.py is the web application
(Starlette, an optional extra: zfcaffe[serve]); static/ is the page."""
from __future__ import annotations

from ..verbs import int_between, verb


def _serve_arguments(p) -> None:
    p.add_argument("--images", help="image folder or list file the page offers (and scans for top-9 on demand)")
    p.add_argument("--top9", metavar="OUT", help="an output folder of 'zfcaffe top9': its top-9 are shown")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int_between(0, 65535), default=8000, help="port (default 8000; 0: a free one)")
    p.add_argument("--queue", type=int_between(1, 1000), default=16,
                   help="requests waiting for the net at most; more are refused with 503 (default 16)")


@verb("serve", "a local web page to explore the model: layers, feature maps, projections, top-9, filters",
      ("net", "preprocess", "head", "detect"), _serve_arguments)
def serve_verb(ctx, args) -> int:
    from ..analyses.common import list_images
    from ..extras import require
    require("starlette", "zfcaffe serve")
    require("uvicorn", "zfcaffe serve")
    from .app import create_app, serve
    from .model import ServedModel
    images = [p for p, _ in list_images(args.images)] if args.images else []
    model = ServedModel(ctx.net, ctx.pre, images, args.labels, args.class_output, args.top9, args.threshold,
                        args.detections)
    model.warm()
    try:
        serve(create_app(model, queue=args.queue), args.host, args.port, quiet=args.quiet)
    finally:
        model.close()           # the uploads' folder goes with the server
    return 0
