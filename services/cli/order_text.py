"""An order as a person reads it: where it is, why it failed, what it delivered."""

from __future__ import annotations


def order_lines(order: dict, history: list[dict]) -> list[str]:
    lines = [f"{order['order_id']}: {order.get('state', '')}, {order.get('progress_done', 0)} of "
             f"{order.get('progress_total', 0)} portraits",
             f"  subject {order.get('subject_id', '')}; styles {', '.join(order.get('styles', []))}; "
             f"count {order.get('count', 0)}"]
    if order.get("failure_reason"):
        lines.append(f"  failed in {order.get('failure_stage', '?')}: {order['failure_reason']}")
    lines += [f"  {event.get('at', '')}  {event_text(event)}" for event in history]
    lines += [portrait_line(portrait) for portrait in order.get("portraits", [])]
    return lines


def portrait_line(portrait: dict) -> str:
    score = portrait.get("identity_score", 0)
    likeness = "unscored" if score < 0 else f"identity {score:.2f}"
    return (f"  {portrait['portrait_id']}  {portrait.get('style', '')}  seed {portrait.get('seed', 0)}  "
            f"{portrait.get('width', 0)}x{portrait.get('height', 0)}  {likeness}")


def event_text(event: dict) -> str:
    if queued := event.get("queued"):
        return (f"queued for {queued.get('stage', '')}: position {queued.get('position', 0)}, "
                f"done in about {queued.get('eta_seconds', 0)} s")
    if training := event.get("training"):
        return f"training step {training.get('step', 0)} of {training.get('total_steps', 0)}, " \
               f"loss {training.get('loss', 0):.3f}"
    if trained := event.get("trained"):
        return f"trained in {trained.get('seconds', 0):.1f} s, best step {trained.get('best_step', 0)}"
    if rendering := event.get("rendering"):
        return f"rendered {rendering.get('rendered', 0)} of {rendering.get('total', 0)}"
    if "done" in event:
        return f"done: {len(event['done'].get('portraits', []))} portraits"
    failed = event.get("failed", {})
    return f"failed in {failed.get('stage', '?')}: {failed.get('reason', '')}"
