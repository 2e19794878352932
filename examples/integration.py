"""A photography chain's integration with Portrait Studio, end to end, with the typed client:
register a customer with their consent, upload their photos (resumable), order portraits, follow
the order, download the portraits.

    python examples/integration.py --endpoint 127.0.0.1:50051 --api-key-file data/secrets/tenant-default.key \\
        --photos ../shared/faces/lisa --headshot ../shared/faces/lisa/lisa_lisa1.jpg --out portraits

Running it again with the same --customer resumes: the subject, the uploaded photos and the order
are found again (idempotency keys and client photo ids), nothing is created twice."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from studio.v1 import common_pb2

from studio_client import StudioClient

HEADSHOT, REFERENCE = common_pb2.PHOTO_ROLE_HEADSHOT, common_pb2.PHOTO_ROLE_REFERENCE


async def run(args: argparse.Namespace) -> int:
    async with StudioClient(args.endpoint, Path(args.api_key_file).read_text().strip()) as studio:
        subject = await studio.create_subject(external_ref=args.customer, idempotency_key=f"subject-{args.customer}")
        print(f"subject {subject.subject_id}")

        photos = sorted(Path(args.photos).glob("*.jpg"))
        headshot = Path(args.headshot) if args.headshot else photos[0]
        upload = [(headshot, HEADSHOT)] + [(path, REFERENCE) for path in photos if path != headshot]
        result = await studio.upload_photos(subject.subject_id, upload)
        accepted = sum(photo.verdict.accepted for photo in result.photos)
        print(f"uploaded {len(result.photos)} photos ({result.resumed} already there), {accepted} accepted")
        for photo in result.photos:
            if not photo.verdict.accepted:
                print(f"  {photo.filename}: {'; '.join(photo.verdict.messages)}")

        order = await studio.create_order(subject.subject_id, args.styles, args.count,
                                          idempotency_key=f"order-{args.customer}")
        print(f"order {order.order_id}")
        async for update in studio.watch(order.order_id):
            event = update.event
            kind = event.WhichOneof("kind")
            print(f"  {kind}" + (f": {event.failed.stage}: {event.failed.reason}" if kind == "failed" else ""))

        order = await studio.get_order(order.order_id)
        if order.state != common_pb2.ORDER_STATE_DONE:
            return 1
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for portrait in order.portraits:
            path = out / f"{portrait.portrait_id}.png"
            path.write_bytes(await studio.download(order.order_id, portrait.portrait_id))
            print(f"portrait {path}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", default="127.0.0.1:50051")
    parser.add_argument("--api-key-file", default="data/secrets/tenant-default.key")
    parser.add_argument("--photos", required=True, help="folder of the customer's photos (*.jpg)")
    parser.add_argument("--headshot", help="the frontal headshot (default: the first photo)")
    parser.add_argument("--customer", default="customer-0001", help="your own reference for the customer")
    parser.add_argument("--styles", nargs="+", default=["studio-frontal-soft"])
    parser.add_argument("--count", type=int, default=1, help="portraits per style")
    parser.add_argument("--out", default="portraits")
    raise SystemExit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
