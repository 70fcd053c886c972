"""Flask adapter: `app.register_blueprint(blueprint(receiver, "/runpod/webhook"))`."""

from __future__ import annotations

from flask import Blueprint, Response, request

from runpod_queue.webhooks import TOKEN_PARAM, WebhookReceiver

__all__ = ["blueprint"]


def blueprint(
    receiver: WebhookReceiver, path: str = "/webhook", *, name: str = "runpod_webhook"
) -> Blueprint:
    """A blueprint with one POST route that verifies and dispatches RunPod deliveries (sync callback)."""
    bp = Blueprint(name, __name__)

    @bp.post(path)
    def runpod_webhook() -> Response:
        if request.content_length is not None and request.content_length > receiver.max_body:
            return Response(b'{"ok": false, "reason": "body too large"}', 413, mimetype="application/json")
        delivery = receiver.handle(request.args.get(TOKEN_PARAM), request.get_data(cache=False))
        return Response(delivery.answer(), delivery.status_code, mimetype="application/json")

    return bp
