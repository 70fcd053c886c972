"""FastAPI adapter: `app.include_router(router(receiver, "/runpod/webhook"))`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from runpod_queue.webhooks import TOKEN_PARAM, WebhookReceiver

__all__ = ["router"]


def router(receiver: WebhookReceiver, path: str = "/webhook") -> APIRouter:
    """A router with one POST route that verifies and dispatches RunPod deliveries."""
    api = APIRouter()

    @api.post(path, include_in_schema=False)
    async def runpod_webhook(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > receiver.max_body:
            return Response(b'{"ok": false, "reason": "body too large"}', 413, media_type="application/json")
        delivery = await receiver.ahandle(request.query_params.get(TOKEN_PARAM), await request.body())
        return Response(delivery.answer(), delivery.status_code, media_type="application/json")

    return api
