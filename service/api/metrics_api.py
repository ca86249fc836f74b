"""GET /metrics: Prometheus text format, summed over gunicorn's workers."""

from __future__ import annotations

from flask import Response
from flask_smorest import Blueprint

from service import metrics

blp = Blueprint("metrics", __name__, description="Prometheus metrics")


@blp.route("/metrics", methods=["GET"])
@blp.doc(responses={"200": {"description": "Prometheus text exposition format"}})
def scrape():
    """Every metric of every live and dead worker (counters), built fresh per scrape."""
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
