"""Flask adapter: `app.register_blueprint(blueprint(receiver, "/runpod/webhook"))`."""

from __future__ import annotations

from flask import Blueprint, Response, request

from runpod_queue.webhooks import TOKEN_PARAM, WebhookReceiver

__all__ = ["blueprint"]


def blueprint(
    receiver: WebhookReceiver, path: str = "/webhook", *, name: str = "runpod_webhook"
) -> Blueprint:
    """A blueprint with one POST route that verifies and dispatches RunPod deliveries (sync callback).

    The token, the announced size and the bodies already in flight are checked before the body is read,
    and at most ``max_body + 1`` bytes are read: a stranger cannot make the app buffer an upload.
    """
    bp = Blueprint(name, __name__)

    @bp.post(path)
    def runpod_webhook() -> Response:
        token = request.args.get(TOKEN_PARAM)
        with receiver.reading(token, request.content_length) as delivery:
            if delivery is None:
                body = request.stream.read(receiver.max_body + 1)
                if len(body) > receiver.max_body:
                    delivery = receiver.too_large()
                else:
                    delivery = receiver.handle(token, body)
                    return Response(delivery.answer(), delivery.status_code, mimetype="application/json")
        refused = Response(delivery.answer(), delivery.status_code, mimetype="application/json")
        refused.headers["Connection"] = "close"  # the rest of the upload is never read
        return refused

    return bp
