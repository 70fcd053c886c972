"""FastAPI adapter: `app.include_router(router(receiver, "/runpod/webhook"))`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from runpod_queue.webhooks import TOKEN_PARAM, Delivery, WebhookReceiver

__all__ = ["router"]


def router(receiver: WebhookReceiver, path: str = "/webhook") -> APIRouter:
    """A router with one POST route that verifies and dispatches RunPod deliveries.

    The token, the announced size and the bodies already in flight are checked before the body is read,
    and the body is read in chunks up to the limit: a stranger cannot make the app buffer an upload.
    """
    api = APIRouter()

    def refuse(delivery: Delivery) -> Response:
        headers = {"connection": "close"}  # the rest of the upload is never read
        return Response(delivery.answer(), delivery.status_code, headers, media_type="application/json")

    @api.post(path, include_in_schema=False)
    async def runpod_webhook(request: Request) -> Response:
        token = request.query_params.get(TOKEN_PARAM)
        declared = request.headers.get("content-length", "")
        with receiver.reading(token, int(declared) if declared.isdigit() else None) as refusal:
            if refusal is not None:
                return refuse(refusal)
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > receiver.max_body:
                    return refuse(receiver.too_large())
            delivery = await receiver.ahandle(token, bytes(body))
        return Response(delivery.answer(), delivery.status_code, media_type="application/json")

    return api
