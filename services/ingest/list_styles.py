"""ListStyles: the style catalogue, as orders may name it."""

from __future__ import annotations

import grpc
from studio.v1 import studio_pb2

from services.common.styles import catalogue
from services.ingest.context import IngestContext
from services.ingest.create_order import MAX_PORTRAITS_PER_STYLE


async def list_styles(
    ctx: IngestContext, request: studio_pb2.ListStylesRequest, context: grpc.aio.ServicerContext
) -> studio_pb2.ListStylesResponse:
    await ctx.authenticate(context)
    return studio_pb2.ListStylesResponse(
        styles=[preset.as_message() for preset in catalogue().values()],
        max_count_per_style=MAX_PORTRAITS_PER_STYLE,
    )
